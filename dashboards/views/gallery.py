"""Prompt gallery: the top-k images of a prompt for base and fine-tuned, grouped by demographic group,
and on request heat maps of where each model finds the prompt (one image, or the mean per group)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from workbench.report.images import ImageLoadError, load_rows
from views import live
from views.common import ViewContext, md, need_attribute, need_audit, single_model_notice

MAX_SHOWN = 24  # thumbnails per model; more does not fit a screen and slows the page
ROLE_TITLES = {"base": "base", "tuned": "fine-tuned", "model": "model"}
HEAT_KEY = "gallery_heat_request"
GROUP_HEAT_KEY = "gallery_group_heat_request"


@st.cache_resource(show_spinner="Loading thumbnails from the dataset ...", max_entries=8)
def _thumbnails(source: str, split: str, rows: tuple[int, ...], columns: tuple | None) -> dict:
    return load_rows(source, split, list(rows), columns=dict(columns) if columns else None, size=112)


def thumbnails(ctx: ViewContext, rows) -> dict:
    """Row -> thumbnail of the audited split ({} with a warning when the data cannot be opened here)."""
    data = ctx.audit.summary.get("data") or {}
    try:
        columns = data.get("columns")
        return _thumbnails(str(data.get("source", "")), str(data.get("split", "")), tuple(sorted(set(int(r) for r in rows))),
                           tuple(sorted(columns.items())) if isinstance(columns, dict) else None)
    except ImageLoadError as err:
        st.warning(f"Thumbnails unavailable: {md(err)}. Ranks and scores are shown without images.")
        return {}


def group_column(rankings: pd.DataFrame, attribute: str) -> pd.Series | None:
    parts = attribute.split("*")
    if any(p not in rankings.columns for p in parts):
        return None
    return rankings[parts].astype(str).agg("*".join, axis=1)


def ranked_roles(chosen: pd.DataFrame) -> list[str]:
    return [r for r in ("base", "tuned") if r in set(chosen["model"])] or sorted(set(chosen["model"]))


def show_ranked_images(chosen: pd.DataFrame, images: dict, k: int) -> None:
    """One column per model: its top-k images (``chosen``: rankings rows with a ``group`` column) by group."""
    roles = ranked_roles(chosen)
    all_groups = sorted(chosen["group"].unique().tolist())
    cols = st.columns(len(roles))
    for col, role in zip(cols, roles):
        mine = chosen[chosen["model"] == role]
        with col:
            st.subheader(ROLE_TITLES.get(role, md(role)))
            counts = mine["group"].value_counts()
            st.caption(" · ".join(f"{md(g)}: {int(counts.get(g, 0))}" for g in all_groups))
            for group in all_groups:
                members = mine[mine["group"] == group]
                st.markdown(f"**{md(group)}**: {len(members)} of the top {k}")
                if members.empty:
                    continue
                thumbs = st.columns(6)
                for i, (_, r) in enumerate(members.iterrows()):
                    caption = f"#{int(r['rank'])} · {float(r['score']):.3f}"
                    with thumbs[i % 6]:
                        image = images.get(int(r["row"]))
                        if image is not None:
                            st.image(image, caption=caption)
                        else:
                            st.caption(f"{caption} (row {int(r['row'])})")


def render(ctx: ViewContext) -> None:
    st.header("Prompt gallery")
    if not (need_audit(ctx) and need_attribute(ctx)):
        return
    rankings = ctx.audit.rankings
    if rankings is None or rankings.empty:
        st.info("This audit wrote no rankings file, so there is no gallery to show.")
        return
    if not ctx.audit.compares:
        single_model_notice(ctx)
    prompts = sorted(rankings["prompt"].astype(str).unique().tolist())
    prompt = st.selectbox("prompt", prompts, key="gallery_prompt")
    depth = int(rankings["rank"].max())
    k = min(ctx.k or depth, depth, MAX_SHOWN)
    if (ctx.k or 0) > k:
        st.caption(f"Showing the top {k} of the top {ctx.k}.")
    groups = group_column(rankings, ctx.attribute)
    if groups is None:
        st.info(f"The rankings file has no column for **{md(ctx.attribute)}**.")
        return
    chosen = rankings.assign(group=groups)
    chosen = chosen[(chosen["prompt"] == prompt) & (chosen["rank"] <= k)].sort_values("rank")
    show_ranked_images(chosen, thumbnails(ctx, chosen["row"]), k)
    heat_maps(ctx, prompt, chosen)


# ---------------------------------------------------------------------------------------------- heat maps


def heat_maps(ctx: ViewContext, prompt: str, chosen: pd.DataFrame) -> None:
    """Heat maps on request: never computed while the page is drawn, only after a button is pressed."""
    st.subheader("Where the model finds the prompt")
    st.caption("Occlusion heat maps: each cell of the image (one per ViT patch unless you choose a grid) is in "
               "turn set to the image processor's mean colour, and the cell's value is how much the image's cosine "
               "similarity to the prompt drops. Red: the region supports the prompt; blue: it counts against it. "
               "Each model's pictures share one colour scale (its value is written under them), the groups' mean "
               "maps included; tick the box to put both models on one scale. Computed from the run's models when "
               "you ask, then cached on disk.")
    cache_dir = live.cache_folder_setting()
    options = chosen.drop_duplicates("row")
    labels = {int(r["row"]): f"row {int(r['row'])} ({r['group']}, #{int(r['rank'])} for {ROLE_TITLES.get(r['model'], r['model'])})"
              for _, r in options.iterrows()}
    shared = st.checkbox("one colour scale for base and fine-tuned", value=False, key="gallery_heat_shared_scale")
    left, right = st.columns(2)
    with left:
        row = st.selectbox("image (from the top k above)", list(labels), format_func=labels.get, key="gallery_heat_row")
        grid = st.number_input("grid cells per side (0: one per ViT patch)", 0, 32, 0, key="gallery_heat_grid")
        if st.button("Draw heat maps of this image", key="gallery_heat_button"):
            st.session_state[HEAT_KEY] = (str(ctx.audit.folder), prompt, int(row), int(grid))
    with right:
        per_group = st.number_input("images per group for the mean map", 1, 64, 8, key="gallery_heat_per_group")
        if st.button(f"Draw mean maps per {ctx.attribute} group", key="gallery_group_heat_button"):
            st.session_state[GROUP_HEAT_KEY] = (str(ctx.audit.folder), prompt, ctx.attribute, int(per_group), int(grid))
    request = st.session_state.get(HEAT_KEY)
    if request and request[0] == str(ctx.audit.folder) and request[1] == prompt:
        _row_maps(ctx, cache_dir, *request[1:], shared=shared)
    request = st.session_state.get(GROUP_HEAT_KEY)
    if request and request[0] == str(ctx.audit.folder) and request[1] == prompt:
        _group_maps(ctx, cache_dir, *request[1:], shared=shared)


def _display_scale(height: int) -> int:
    return max(1, 256 // max(1, height))


def colour_scales(maps: dict[str, list[np.ndarray]], shared: bool) -> dict[str, float]:
    """role -> the value drawn at full colour: the largest |value| of the role's maps, or of every map when shared."""
    own = {role: max((float(np.abs(m).max()) for m in ms), default=0.0) for role, ms in maps.items()}
    if shared:
        top = max(own.values(), default=0.0)
        return {role: top for role in own}
    return own


def _row_maps(ctx: ViewContext, cache_dir: str, prompt: str, row: int, grid: int, *, shared: bool) -> None:
    session = live.open_audit(ctx.audit.folder, cache_dir)
    if session is None:
        return
    from workbench.live import LiveError, heatmap_for_row, render_heatmap  # lazy: see views/live.py

    try:
        with st.spinner("Encoding the masked copies ..."):
            maps = {role: heatmap_for_row(session, role, row, prompt, grid=grid or None) for role in session.roles}
            pixels = {role: session.pixels(role, [row])[0].permute(1, 2, 0).numpy() for role in session.roles}
    except LiveError as err:
        st.error(md(err))
        return
    vmax = colour_scales({role: [m] for role, m in maps.items()}, shared)
    st.markdown(f"**Row {row}**, prompt *{md(prompt)}*")
    for col, role in zip(st.columns(len(maps)), maps):
        with col:
            title = f"{ROLE_TITLES.get(role, role)} · row {row}"
            st.image(render_heatmap(pixels[role], maps[role], vmax=vmax[role], title=title,
                                    scale=_display_scale(pixels[role].shape[0])),
                     caption=f"{ROLE_TITLES.get(role, role)}: peak drop {float(maps[role].max()):.4f}")


def _group_maps(ctx: ViewContext, cache_dir: str, prompt: str, attribute: str, per_group: int, grid: int, *,
                shared: bool) -> None:
    session = live.open_audit(ctx.audit.folder, cache_dir)
    if session is None:
        return
    from workbench.live import LiveError, group_mean_maps, render_heatmap  # lazy: see views/live.py

    try:
        with st.spinner(f"Heat maps of up to {per_group} images per group ..."):
            means = {role: group_mean_maps(session, role, prompt, attribute, per_group=per_group, grid=grid or None)
                     for role in session.roles}
            first = next(iter(means.values()))
            # The map is drawn over the mean of the images it averages, so the layout they share shows through.
            backdrops = {group: session.pixels(session.roles[0], rows).float().mean(dim=0).round().byte()
                         .permute(1, 2, 0).numpy() for group, (_, rows) in first.items()}
    except LiveError as err:
        st.error(md(err))
        return
    vmax = colour_scales({role: [m for m, _ in per.values()] for role, per in means.items()}, shared)
    st.markdown(f"**Mean map per {md(attribute)} group**, prompt *{md(prompt)}* (the same sampled images for "
                "every model, drawn over their mean image)")
    for role, per in means.items():
        st.markdown(f"**{ROLE_TITLES.get(role, md(role))}**")
        for col, (group, (mean, rows)) in zip(st.columns(len(per)), per.items()):
            with col:
                st.image(render_heatmap(backdrops[group], mean, vmax=vmax[role], title=f"{ROLE_TITLES.get(role, role)} · {group}",
                                        scale=_display_scale(backdrops[group].shape[0])),
                         caption=f"{group}: mean of {len(rows)} images")

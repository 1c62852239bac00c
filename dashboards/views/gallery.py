"""Prompt gallery: the top-k images of a prompt for base and fine-tuned, grouped by demographic group."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.report.images import ImageLoadError, load_rows
from views.common import ViewContext, md, need_attribute, need_audit, single_model_notice

MAX_SHOWN = 24  # thumbnails per model; more does not fit a screen and slows the page


@st.cache_resource(show_spinner="Loading thumbnails from the dataset ...", max_entries=8)
def _thumbnails(source: str, split: str, rows: tuple[int, ...], columns: tuple | None) -> dict:
    return load_rows(source, split, list(rows), columns=dict(columns) if columns else None, size=112)


def group_column(rankings: pd.DataFrame, attribute: str) -> pd.Series | None:
    parts = attribute.split("*")
    if any(p not in rankings.columns for p in parts):
        return None
    return rankings[parts].astype(str).agg("*".join, axis=1)


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
    data = ctx.audit.summary.get("data") or {}
    images: dict = {}
    try:
        columns = data.get("columns")
        images = _thumbnails(str(data.get("source", "")), str(data.get("split", "")),
                             tuple(sorted(set(int(r) for r in chosen["row"]))),
                             tuple(sorted(columns.items())) if isinstance(columns, dict) else None)
    except ImageLoadError as err:
        st.warning(f"Thumbnails unavailable: {md(err)}. Ranks and scores are shown without images.")
    roles = [r for r in ("base", "tuned") if r in set(chosen["model"])] or sorted(set(chosen["model"]))
    all_groups = sorted(chosen["group"].unique().tolist())
    cols = st.columns(len(roles))
    for col, role in zip(cols, roles):
        mine = chosen[chosen["model"] == role]
        with col:
            st.subheader("fine-tuned" if role == "tuned" else md(role))
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

"""Live prompt probe: type a prompt, see its top-k images and Skew@k / MaxSkew for base and fine-tuned.

The numbers come from the audit's own computation (workbench.live.probe) over the audit's
cached image embeddings: only the text tower runs. With the audit's n_boot and seed, a
prompt the audit ranked gets exactly the audit's rows. The prompt can then be added to
the audit file (written as data and validated before the file is replaced).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.report.text import format_estimate, format_value
from views import live
from views.common import ViewContext, md, need_attribute, need_audit
from views.gallery import ROLE_TITLES, group_column, show_ranked_images, thumbnails

RESULT_KEY = "probe_result"
MAX_SHOWN = 24


def _probe(folder, cache_dir: str, prompt: str, n_boot: int, seed: int, with_controls: bool):
    session = live.open_audit(folder, cache_dir)
    if session is None:
        return None
    from workbench.live import LiveError, probe_prompt  # lazy: see views/live.py

    try:
        with st.spinner("Ranking the audited images by the prompt and bootstrapping ..."):
            return probe_prompt(session, prompt, n_boot=n_boot, seed=seed, with_controls=with_controls)
    except LiveError as err:
        st.error(md(err))
        return None


def skew_rows(results: pd.DataFrame, attribute: str, k: int, target: str) -> pd.DataFrame:
    """Per model role and group: Skew@k and specific skew with their intervals, and the group's n."""
    mine = results[(results["attribute"] == attribute) & (results["k"] == k) & (results["target"] == target)]
    out = []
    for (role, group), rows in mine[mine["metric"].isin(["skew", "specific_skew"])].groupby(["model", "group"], sort=False):
        cell = {r["metric"]: r for _, r in rows.iterrows()}
        skew, specific = cell.get("skew"), cell.get("specific_skew")
        out.append({
            "model": ROLE_TITLES.get(role, "delta (tuned − base)" if role == "delta" else role),
            "group": group,
            f"Skew@{k} [CI]": format_estimate(skew["value"], skew["ci_low"], skew["ci_high"]) if skew is not None else "n/a",
            f"specific Skew@{k} [CI]": (format_estimate(specific["value"], specific["ci_low"], specific["ci_high"])
                                        if specific is not None else "n/a"),
            "n": int(skew["n"]) if skew is not None else 0,
        })
    return pd.DataFrame(out)


def interval_text(row) -> str:
    """'[0.424, 0.812]': the row's interval as format_estimate writes it ('n/a' when unknown)."""
    text = format_estimate(row["value"], row["ci_low"], row["ci_high"])
    return text[text.index("["):] if "[" in text else "n/a"


def max_skew_row(results: pd.DataFrame, role: str, attribute: str, k: int, target: str) -> pd.Series | None:
    rows = results[(results["model"] == role) & (results["metric"] == "max_skew") & (results["attribute"] == attribute)
                   & (results["k"] == k) & (results["target"] == target)]
    return rows.iloc[0] if len(rows) else None


def render(ctx: ViewContext) -> None:
    st.header("Live prompt probe")
    if not (need_audit(ctx) and need_attribute(ctx)):
        return
    boot = ctx.audit.summary.get("bootstrap") or {}
    spec = ctx.audit.summary.get("spec") or {}
    if not spec.get("skew"):
        st.info("This audit has no skew section (k values and control prompts), so there is nothing to probe against.")
        return
    st.caption("Type a prompt: the audited images are ranked by it for every model, with Skew@k, MaxSkew and their "
               "bootstrap intervals computed by the audit's own code on the audit's cached image embeddings (only the "
               "text tower runs). With the audit's resamples and seed, a prompt that is in the audit gets exactly the "
               "audit's numbers.")
    cache_dir = live.cache_folder_setting()
    with st.form("probe_form"):
        prompt = st.text_input("prompt", key="probe_prompt", placeholder="e.g. an irregular pigmented lesion")
        left, right = st.columns(2)
        n_boot = left.number_input("bootstrap resamples (the audit's by default)", 10, 100_000,
                                   int(boot.get("n_boot", 1000)), key="probe_n_boot")
        seed = right.number_input("seed", 0, 2**31 - 1, int(boot.get("seed", 0)), key="probe_seed")
        n_controls = len((spec.get("skew") or {}).get("controls") or [])
        with_controls = st.checkbox(f"specific skew against the audit's {n_controls} control prompts (slower: "
                                    "ranks every control prompt in every resample)", value=True, key="probe_controls")
        asked = st.form_submit_button("Probe")
    if asked:
        result = _probe(ctx.audit.folder, cache_dir, prompt, int(n_boot), int(seed), with_controls)
        st.session_state[RESULT_KEY] = (str(ctx.audit.folder), result) if result is not None else None
    stored = st.session_state.get(RESULT_KEY)
    if not stored or stored[0] != str(ctx.audit.folder):
        return
    show_result(ctx, stored[1])
    add_to_audit_file(ctx, stored[1].prompt)


def show_result(ctx: ViewContext, result) -> None:
    results = result.results
    targets = sorted(set(results["target"]) - {""}, key=lambda t: (t != "uniform", t))
    ks = sorted(set(int(k) for k in results["k"]) - {0})
    if not ks or not targets:
        st.warning("The probe computed no skew rows: " + md("; ".join(result.warnings) or "no k below the data size"))
        return
    k = ctx.k if ctx.k in ks else ks[0]
    target = st.selectbox("target distribution", targets, key="probe_target") if len(targets) > 1 else targets[0]
    where = "in the audit" if result.in_audit else "not in the audit"
    st.markdown(f"**{md(result.prompt)}** ({where}), k = {k}, target {md(target)}, {result.n_boot} resamples, "
                f"seed {result.seed}")
    roles = [r for r in ("base", "tuned", "delta") if r in set(results["model"])] or sorted(set(results["model"]))
    level = float((ctx.audit.summary.get("bootstrap") or {}).get("level", 0.95))
    cols = st.columns(len(roles))
    for col, role in zip(cols, roles):
        row = max_skew_row(results, role, ctx.attribute, k, target)
        title = "delta (tuned − base)" if role == "delta" else ROLE_TITLES.get(role, role)
        # The interval goes under the number: a metric's value is cut off at the column's width.
        col.metric(f"MaxSkew@{k} · {title}", format_value(row["value"]) if row is not None else "n/a")
        if row is not None:
            col.caption(f"{level:.0%} CI {interval_text(row)}")
    table = skew_rows(results, ctx.attribute, k, target)
    if table.empty:
        st.info(f"No skew rows for attribute **{md(ctx.attribute)}**.")
    else:
        st.dataframe(table, hide_index=True)
    for warning in result.warnings:
        st.caption(md(warning))
    rankings = result.rankings
    groups = group_column(rankings, ctx.attribute)
    if groups is None or rankings.empty:
        return
    shown = min(k, MAX_SHOWN)
    chosen = rankings.assign(group=groups)
    chosen = chosen[chosen["rank"] <= shown].sort_values("rank")
    st.subheader(f"Top {shown} images")
    show_ranked_images(chosen, thumbnails(ctx, chosen["row"]), shown)


def add_to_audit_file(ctx: ViewContext, prompt: str) -> None:
    st.subheader("Add this prompt to the audit")
    source = str((ctx.audit.summary.get("spec") or {}).get("source", ""))
    path = st.text_input("audit file", value=source, key="probe_audit_file",
                         help="The YAML file the audit was run from. The prompt is added to skew.prompts; the file is "
                              "validated before it is replaced. Comments below its header are not kept.")
    if not st.button(f"Add “{prompt}” to the audit file", key="probe_add_button"):
        return
    from workbench.live import AuditFileError, add_skew_prompt  # lazy: see views/live.py

    try:
        spec, changed = add_skew_prompt(path, prompt)
    except AuditFileError as err:
        st.error(md(err))
        return
    if changed:
        st.success(f"Added to {md(path)}: the audit now ranks {len(spec.skew.prompts)} prompts. Re-run the audit to "
                   "see it in every view and in the verdict.")
    else:
        st.info(f"{md(path)} already ranks this prompt; the file is unchanged.")

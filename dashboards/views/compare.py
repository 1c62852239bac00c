"""Base versus fine-tuned: per-group accuracy of both models, the paired delta and regressions."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.report import tables
from workbench.report.text import format_delta, format_estimate
from views import charts
from views.common import ViewContext, md, need_attribute, need_audit, single_model_notice


def render(ctx: ViewContext) -> None:
    st.header("Base versus fine-tuned")
    if not need_audit(ctx):
        return
    table = ctx.audit.table
    overall = tables.overall_accuracy(table).set_index("model")
    cols = st.columns(3)
    for col, role, label in zip(cols, ("base", "tuned"), ("base accuracy", "fine-tuned accuracy")):
        if role in overall.index:
            r = overall.loc[role]
            col.metric(label, format_estimate(r["value"], r["ci_low"], r["ci_high"], percent=True))
    if "delta" in overall.index:
        r = overall.loc["delta"]
        cols[2].metric("domain gain", format_delta(r["value"]),
                       help="tuned minus base on the audit split, paired bootstrap interval: "
                            + format_estimate(r["value"], r["ci_low"], r["ci_high"], percent=True))
    zeroshot = ctx.run.zeroshot or {}
    if isinstance(zeroshot.get("base"), dict) and isinstance(zeroshot.get("tuned"), dict):
        parts = [f"{md(split)}: {format_delta(zeroshot['tuned'][split] - zeroshot['base'][split])}"
                 for split in zeroshot["base"] if split in zeroshot["tuned"]
                 and all(isinstance(zeroshot[r][split], (int, float)) for r in ("base", "tuned"))]
        if parts:
            st.caption("Gain per split from training's zero-shot evaluation: " + ", ".join(parts))
    if not need_attribute(ctx):
        return
    min_n = ctx.audit.min_group_size
    if not ctx.audit.compares:
        single_model_notice(ctx)
        frame = tables.group_accuracy(table, ctx.attribute)
        frame = frame[frame["model"] != "delta"]
        if len(frame):
            st.altair_chart(charts.single_model_accuracy(frame, min_n), width="stretch")
        return
    comparison = tables.accuracy_comparison(table, ctx.attribute)
    if comparison.empty:
        st.info(f"No per-group accuracy rows for attribute **{md(ctx.attribute)}**.")
        return
    regressions = comparison[comparison["regression"]]
    if len(regressions):
        names = ", ".join(f"**{md(g)}** ({format_delta(d)})" for g, d in zip(regressions["group"], regressions["delta"]))
        confirmed = comparison[comparison["confirmed"]]
        st.error(f"Accuracy falls after fine-tuning for {names}"
                 + (f"; the interval is wholly below zero for {len(confirmed)} of them." if len(confirmed)
                    else "; every one of these intervals still includes zero."))
    else:
        st.success(f"No {md(ctx.attribute)} group loses accuracy after fine-tuning.")
    left, right = st.columns([3, 2])
    with left:
        st.subheader(f"Accuracy per {md(ctx.attribute)} group")
        st.altair_chart(charts.accuracy_dumbbell(comparison, min_n), width="stretch")
    with right:
        st.subheader("Change (tuned − base)")
        st.altair_chart(charts.delta_bars(comparison), width="stretch")
    shown = pd.DataFrame({
        "group": comparison["group"], "n": comparison["n"],
        "base": [format_estimate(v, lo, hi, percent=True) for v, lo, hi in
                 zip(comparison["base"], comparison["base_low"], comparison["base_high"])],
        "fine-tuned": [format_estimate(v, lo, hi, percent=True) for v, lo, hi in
                       zip(comparison["tuned"], comparison["tuned_low"], comparison["tuned_high"])],
        "delta": [format_delta(v) for v in comparison["delta"]],
        "flag": ["regression" if c else ("drop" if r else "") for r, c in
                 zip(comparison["regression"], comparison["confirmed"])],
        "status": comparison["status"],
    })
    st.dataframe(shown, hide_index=True, width="stretch")

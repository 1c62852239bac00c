"""Disparity versus a chosen reference group: difference and ratio per group, n on every bar."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.report import tables
from workbench.report.text import format_delta, format_estimate, format_value
from views import charts
from views.common import ViewContext, md, need_attribute, need_audit, single_model_notice


def render(ctx: ViewContext) -> None:
    st.header("Disparity versus a reference group")
    if not (need_audit(ctx) and need_attribute(ctx)):
        return
    table = ctx.audit.table
    roles = ctx.audit.roles
    if not ctx.audit.compares:
        single_model_notice(ctx)
    role = st.radio("model", roles, index=len(roles) - 1, horizontal=True, key="disparity_model")
    acc = tables.group_accuracy(table, ctx.attribute)
    acc = acc[acc["model"] == role]
    groups = acc["group"].tolist()
    if not groups:
        st.info(f"No per-group accuracy for **{md(ctx.attribute)}** and model **{md(role)}**.")
        return
    audit_reference = ctx.audit.reference_group(ctx.attribute) or tables.audit_reference_group(table, ctx.attribute, role)
    default = audit_reference
    if default not in groups:
        default = acc.sort_values("n", ascending=False).iloc[0]["group"]
    reference = st.selectbox("reference group", groups, index=groups.index(default),
                             key=f"reference_{ctx.attribute}")
    frame = tables.disparity(table, ctx.attribute, role, reference, audit_reference)
    min_n = ctx.audit.min_group_size
    if not frame["from_audit"].any():
        st.caption(f"The audit's intervals are measured against another reference group; the values against "
                   f"**{md(reference)}** are computed from the per-group accuracies, without intervals.")
    left, right = st.columns(2)
    with left:
        st.subheader("Difference")
        st.altair_chart(charts.disparity_bars(frame, "difference", min_n), width="stretch")
    with right:
        st.subheader("Ratio")
        st.altair_chart(charts.disparity_bars(frame, "ratio", min_n), width="stretch")
        st.caption("Dashed lines: the 0.8 to 1.25 band of the four-fifths rule.")
    small = frame[frame["status"].eq("small_group") | ((frame["n"] < min_n) if min_n else False)]
    for g, n in zip(small["group"], small["n"]):
        st.warning(f"Small group **{md(g)}**: n={int(n)}" + (f", below the minimum {min_n}" if min_n else "")
                   + ". Its interval is wide; do not read its point value alone.")
    shown = pd.DataFrame({
        "group": frame["group"], "n": frame["n"],
        "accuracy": [format_value(v, percent=True) for v in frame["accuracy"]],
        "difference": [format_delta(v) + ("" if pd.isna(lo) else f" [{100*lo:+.1f}, {100*hi:+.1f}]")
                       for v, lo, hi in zip(frame["difference"], frame["difference_low"], frame["difference_high"])],
        "ratio": [format_estimate(v, lo, hi) for v, lo, hi in zip(frame["ratio"], frame["ratio_low"], frame["ratio_high"])],
        "status": ["reference" if r else s for r, s in zip(frame["is_reference"], frame["status"])],
    })
    st.dataframe(shown, hide_index=True, width="stretch")
    gaps = tables.attribute_gaps(table, ctx.attribute)
    gaps = gaps[gaps["model"] == role]
    if len(gaps):
        cols = st.columns(len(gaps))
        for col, (_, g) in zip(cols, gaps.iterrows()):
            pct = g["metric"] == "accuracy_gap"
            col.metric(g["metric"].replace("_", " "), format_estimate(g["value"], g["ci_low"], g["ci_high"], percent=pct))

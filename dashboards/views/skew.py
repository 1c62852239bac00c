"""Association skew: Skew@k heatmaps of neutral prompts x groups, per-prompt MaxSkew/MinSkew/NDKL."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.report import tables
from workbench.report.text import format_estimate, format_value
from views import charts
from views.common import ViewContext, md, need_attribute, need_audit, single_model_notice

TARGET_HELP = {"uniform": "uniform: every group 1/|groups| of the top k",
               "data": "data: each group's share of the audited images"}


def render(ctx: ViewContext) -> None:
    st.header("Association skew")
    if not (need_audit(ctx) and need_attribute(ctx)):
        return
    table = ctx.audit.table
    targets = tables.ranking_targets(table)
    if not targets or ctx.k is None:
        st.info("The audit results hold no ranking (skew) metrics.")
        return
    target = st.selectbox("target distribution", targets, format_func=lambda t: TARGET_HELP.get(t, t),
                          key="skew_target") if len(targets) > 1 else targets[0]
    st.caption(f"Skew@k = ln(share of the group in the top {ctx.k} / target share), target "
               f"{md(TARGET_HELP.get(target, target))}. Positive: the prompt over-retrieves the group.")
    matrix = tables.skew_matrix(table, ctx.attribute, ctx.k, target)
    if matrix.empty:
        st.info(f"No Skew@{ctx.k} rows for attribute **{md(ctx.attribute)}** and target **{md(target)}**.")
        return
    if not ctx.audit.compares:
        single_model_notice(ctx)
    roles = [r for r in ("base", "tuned", "delta") if r in set(matrix["model"])]
    limit = max(0.1, float(matrix["value"].abs().max()))
    titles = {"base": "base", "tuned": "fine-tuned", "delta": "delta (tuned − base)"}
    # Stacked, not side by side: prompts are long labels and would squeeze three heatmaps to slivers.
    for role in roles:
        st.altair_chart(charts.skew_heatmap(matrix[matrix["model"] == role], titles[role], limit), width="stretch")
    stats = tables.prompt_skew_stats(table, ctx.attribute, ctx.k, target)
    stats = stats[stats["model"] != "delta"]
    if len(stats):
        st.subheader("Per prompt")
        st.altair_chart(charts.prompt_stat_bars(stats), width="content")
        wide = stats.assign(shown=[format_estimate(v, lo, hi) for v, lo, hi in
                                   zip(stats["value"], stats["ci_low"], stats["ci_high"])])
        wide = wide.pivot_table(index=["prompt", "model"], columns="metric", values="shown", aggfunc="first")
        st.dataframe(wide.reset_index(), hide_index=True, width="stretch")
        st.subheader("Spread across prompts")
        st.altair_chart(charts.spread_over_prompts(stats[stats["metric"] == "max_skew"]), width="stretch")
        aggregates = tables.skew_aggregates(table, ctx.attribute, ctx.k, target)
        rows = []
        for role in [r for r in roles if r != "delta"]:
            agg = aggregates[aggregates["model"] == role].set_index("metric")["value"]
            per_prompt = stats[(stats["model"] == role) & (stats["metric"] == "max_skew")]["value"]
            rows.append({"model": role,
                         "MaxSkew mean": format_value(agg.get("max_skew_mean", per_prompt.mean())),
                         "MaxSkew std": format_value(agg.get("max_skew_std", per_prompt.std())),
                         "MaxSkew min": format_value(per_prompt.min()), "MaxSkew max": format_value(per_prompt.max()),
                         "prompts": int(per_prompt.size)})
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

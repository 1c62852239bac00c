"""Association skew: Skew@k heatmaps of neutral prompts x groups, per-prompt MaxSkew/MinSkew/NDKL,
specific skew (a prompt's skew beyond the control prompts') beside raw skew, and group dominance."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.report import tables
from workbench.report.text import format_estimate, format_value
from workbench.report.verdict import model_phrase, role_words
from views import charts
from views.common import ViewContext, md, need_attribute, need_audit, single_model_notice

TARGET_HELP = {"uniform": "uniform: every group 1/|groups| of the top k",
               "data": "data: each group's share of the audited images"}


def colour_limits(matrix: pd.DataFrame, roles: list[str]) -> list[float]:
    """Half-width of each heatmap's colour domain (centred at 0), in the order of ``roles``.

    Base and fine-tuned share one domain, covering both, so equal colours mean equal skew. The
    delta is a difference of two skews, up to twice as large as either: it gets its own domain,
    covering its own largest |value|, so its colours neither run out nor wash out.
    """
    models = [r for r in roles if r != "delta"]
    shared = charts.symmetric_limit(matrix.loc[matrix["model"].isin(models), "value"])
    return [charts.symmetric_limit(matrix.loc[matrix["model"] == "delta", "value"]) if role == "delta" else shared
            for role in roles]


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
    titles = {"base": "base", "tuned": "fine-tuned", "delta": "delta (tuned − base)"}
    # Stacked, not side by side: prompts are long labels and would squeeze three heatmaps to slivers.
    for role, limit in zip(roles, colour_limits(matrix, roles)):
        st.altair_chart(charts.skew_heatmap(matrix[matrix["model"] == role], titles[role], limit), width="stretch")
    specific = tables.skew_matrix(table, ctx.attribute, ctx.k, target, metric="specific_skew")
    if len(specific):
        st.subheader("Specific skew: beyond the control prompts")
        st.caption(f"Specific Skew@{ctx.k} = a prompt's Skew@{ctx.k} minus the mean Skew@{ctx.k} of the control "
                   "prompts (unrelated to any attribute) for the same model, k and target: what the prompt "
                   "adds to how the model already ranks images by group.")
        spec_roles = [r for r in ("base", "tuned", "delta") if r in set(specific["model"])]
        for role, limit in zip(spec_roles, colour_limits(specific, spec_roles)):
            st.altair_chart(charts.skew_heatmap(specific[specific["model"] == role], "specific, " + titles[role],
                                                limit), width="stretch")
    stats = tables.prompt_skew_stats(table, ctx.attribute, ctx.k, target)
    stats = stats[stats["model"] != "delta"]
    if len(stats):
        st.subheader("Per prompt")
        st.altair_chart(charts.prompt_stat_bars(stats), width="content")
        wide = stats.assign(shown=[format_estimate(v, lo, hi) for v, lo, hi in
                                   zip(stats["value"], stats["ci_low"], stats["ci_high"])])
        wide = wide.pivot_table(index=["prompt", "model"], columns="metric", values="shown",
                                aggfunc="first").reset_index()
        sizes = stats.groupby(["prompt", "model"])["n"].max()
        wide.insert(2, "attribute", ctx.attribute)
        wide["n"] = [int(sizes[(p, m)]) for p, m in zip(wide["prompt"], wide["model"])]
        st.dataframe(wide, hide_index=True, width="stretch")
        _raw_and_specific(ctx, target)
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
    _dominance(ctx, target)


def _raw_and_specific(ctx: ViewContext, target: str) -> None:
    """MaxSkew of each prompt next to its specific MaxSkew, each naming the over-represented group."""
    both = tables.prompt_skew_comparison(ctx.audit.table, ctx.attribute, ctx.k, target)
    if both.empty or both["specific"].isna().all():
        return
    st.subheader(f"Raw and specific MaxSkew@{ctx.k} per prompt")
    shown = pd.DataFrame({
        "prompt": both["prompt"], "model": [role_words(m) for m in both["model"]], "attribute": ctx.attribute,
        f"MaxSkew@{ctx.k} [CI]": [format_estimate(v, lo, hi) for v, lo, hi in
                                  zip(both["max_skew"], both["max_skew_low"], both["max_skew_high"])],
        "over-represented": both["max_skew_group"],
        f"specific MaxSkew@{ctx.k} [CI]": [format_estimate(v, lo, hi) for v, lo, hi in
                                           zip(both["specific"], both["specific_low"], both["specific_high"])],
        "over-represented (specific)": both["specific_group"],
        "n": both["n"],
    })
    st.dataframe(shown, hide_index=True, width="stretch")


def _dominance(ctx: ViewContext, target: str) -> None:
    """Group dominance per model with its sentence: does the model rank images by group whatever the prompt?"""
    rows = tables.group_dominance(ctx.audit.table, ctx.attribute, ctx.k, target)
    dominance = rows[rows["metric"] == "group_dominance"]
    if dominance.empty:
        return
    st.subheader("Group dominance")
    ids = {role: str((entry or {}).get("model", "")) for role, entry in (ctx.audit.summary.get("models") or {}).items()
           if isinstance(entry, dict)}
    meaning = str((ctx.audit.summary.get("conventions") or {}).get(
        "group_dominance", "share of control prompts whose Skew@k interval for some group excludes 0"))
    checks = [c for c in ctx.audit.verdict.checks + ctx.audit.verdict.reference_checks
              if c.kind == "dominance" and c.attribute == ctx.attribute and c.k in (0, ctx.k)
              and c.target in ("", target)]
    control = rows[rows["metric"] == "control_max_skew_mean"].set_index("model")
    table_rows = []
    for _, r in dominance.iterrows():
        role = r["model"]
        value = format_estimate(r["value"], r["ci_low"], r["ci_high"])
        mean = (format_estimate(control.loc[role, "value"], control.loc[role, "ci_low"], control.loc[role, "ci_high"])
                if role in control.index else "n/a")
        table_rows.append({"model": model_phrase(role, ids.get(role, "")), "attribute": ctx.attribute,
                           "group dominance [CI]": value, "n": int(r["n"]),
                           f"control prompts' mean MaxSkew@{ctx.k} [CI]": mean})
        sentence = next((c.sentence for c in checks if c.role == role), "")
        if not sentence:
            sentence = (f"{model_phrase(role, ids.get(role, ''))}: group dominance for {ctx.attribute} at "
                        f"k={ctx.k} (target {target}) {value}, n={int(r['n'])} ({meaning})")
        st.markdown(f"- {md(sentence)}")
    st.caption(f"Group dominance: {md(meaning)}. High values mean the model sorts images by "
               f"{md(ctx.attribute)} whatever the prompt, so a single prompt's skew says little about that prompt.")
    st.dataframe(pd.DataFrame(table_rows), hide_index=True, width="stretch")

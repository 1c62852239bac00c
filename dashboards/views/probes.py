"""Group prompts and harmful labels: WEAT-style group-prompt effects with Holm-adjusted p-values,
and the rate at which each group's images get a harmful label, per label."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.report import tables
from workbench.report.text import format_change, format_estimate, format_value
from workbench.report.verdict import model_phrase, role_words
from views.common import ViewContext, md, need_attribute, need_audit

ANY_HARMFUL = "any harmful label"


def render(ctx: ViewContext) -> None:
    st.header("Group prompts and harmful labels")
    if not (need_audit(ctx) and need_attribute(ctx)):
        return
    table = ctx.audit.table
    ids = {role: str((entry or {}).get("model", "")) for role, entry in (ctx.audit.summary.get("models") or {}).items()
           if isinstance(entry, dict)}

    st.subheader("Group-prompt association (WEAT-style)")
    weat = tables.weat_tests(table, ctx.audit.summary.get("weat_tests") or [])
    mine = weat[weat["attribute"] == ctx.attribute]
    if weat.empty:
        st.info("This audit computed no group-prompt (WEAT) effects: its definition has no group_prompts.")
    elif mine.empty:
        st.info(f"No group-prompt effects for **{md(ctx.attribute)}**; the audit has them for "
                + ", ".join(f"**{md(a)}**" for a in sorted(set(weat["attribute"]))) + ".")
    else:
        st.caption("Effect size: the difference between two groups' images in how much closer they are to a "
                   "prompt naming their group than to the same prompt naming the other group, in pooled standard "
                   "deviations. p: permutation test; Holm: adjusted over every group-prompt test in this audit.")
        for _, r in mine[mine["p_holm"] < 0.05].iterrows():
            st.warning(f"{md(model_phrase(r['model'], ids.get(r['model'], '')))}, {md(r['attribute'])} "
                       f"{md(r['group'])}, prompt '{md(r['prompt'])}': effect size "
                       f"{md(format_estimate(r['value'], r['ci_low'], r['ci_high']))}, n={int(r['n'])}, "
                       f"Holm p={r['p_holm']:.3g}: {md(r['direction'])}.")
        shown = pd.DataFrame({
            "model": [role_words(m) for m in mine["model"]], "attribute": mine["attribute"],
            "groups": mine["group"], "prompt": mine["prompt"],
            "effect size [CI]": [format_estimate(v, lo, hi) for v, lo, hi in
                                 zip(mine["value"], mine["ci_low"], mine["ci_high"])],
            "direction": mine["direction"],
            "n": mine["n"],
            "p": [format_value(p, digits=4) for p in mine["p_value"]],
            "p (Holm)": [format_value(p, digits=4) for p in mine["p_holm"]],
            "significant after Holm": ["yes" if p < 0.05 else "no" for p in mine["p_holm"].fillna(1.0)],
        })
        st.dataframe(shown, hide_index=True, width="stretch")

    st.subheader("Harmful labels")
    harmful = tables.harmful_rates(table, ctx.attribute)
    if harmful.empty:
        st.info(f"No harmful-label rates for **{md(ctx.attribute)}**: the audit definition has no harmful "
                "labels, or they were not computed (see the release gate's 'Not computed').")
        return
    st.caption("Share of each group's images whose top zero-shot label is a harmful label (mixed into the "
               "class labels), per label and for any harmful label, with the rate over all images beside it.")
    shown = pd.DataFrame({
        "model": [role_words(m) for m in harmful["model"]], "attribute": ctx.attribute,
        "group": harmful["group"], "label": [lbl or ANY_HARMFUL for lbl in harmful["label"]],
        "rate [CI]": [format_change(v, lo, hi) if m == "delta" else format_estimate(v, lo, hi, percent=True)
                      for m, v, lo, hi in zip(harmful["model"], harmful["value"], harmful["ci_low"],
                                              harmful["ci_high"])],
        "direction": harmful["direction"],
        "n": harmful["n"], "status": harmful["status"],
    })
    st.dataframe(shown, hide_index=True, width="stretch")

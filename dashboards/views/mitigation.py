"""Mitigation: base, fine-tuned and every remedy's variant, accuracy against each checked fairness metric.

Reads ``<run>/variants/summary.json`` (written by ``python -m workbench.mitigate``) through
``workbench.report.mitigation``: the trade-off points with their intervals, the table of
variant-minus-candidate differences with paired intervals, one sentence per remedy, and the
model card of any variant (from the release-gate audit in the variant's own folder).
"""

from __future__ import annotations

import shlex

import altair as alt
import pandas as pd
import streamlit as st

from workbench.report import MODEL_CARD_FILE, ResultsError, choose_audit, read_run, render_model_card
from workbench.report.mitigation import (
    MITIGATION_DIR,
    MITIGATION_SUMMARY,
    MitigationError,
    compared_metrics,
    differences_frame,
    read_mitigation,
    tradeoff_frame,
    variants_frame,
)
from views.common import VERDICT_COLORS, ViewContext, md

MITIGATE_COMMAND = ".venv/bin/python -m workbench.mitigate {run} --remedy balance align project wise"


def tradeoff_chart(frame: pd.DataFrame, metric_title: str, percent: bool) -> alt.Chart:
    """One point per model: overall accuracy (x) against the metric (y), each with its interval as a bar."""
    fmt = ".1%" if percent else ".3f"
    base = alt.Chart(frame)
    color = alt.Color("model:N", title="model")
    x = alt.X("accuracy:Q", title="overall accuracy", axis=alt.Axis(format=".1%"), scale=alt.Scale(zero=False))
    y = alt.Y("value:Q", title=metric_title, axis=alt.Axis(format=fmt), scale=alt.Scale(zero=False))
    tooltip = [alt.Tooltip("model:N"), alt.Tooltip("accuracy:Q", format=".1%"), alt.Tooltip("value:Q", format=fmt),
               alt.Tooltip("low:Q", format=fmt), alt.Tooltip("high:Q", format=fmt)]
    points = base.mark_point(filled=True, size=90).encode(x=x, y=y, color=color, tooltip=tooltip)
    vertical = base.mark_rule().encode(x="accuracy:Q", y="low:Q", y2="high:Q", color=color)
    horizontal = base.mark_rule().encode(y="value:Q", x="accuracy_low:Q", x2="accuracy_high:Q", color=color)
    return (vertical + horizontal + points).properties(height=320)


def render(ctx: ViewContext) -> None:
    st.header("Mitigation")
    try:
        summary = read_mitigation(ctx.run.folder)
    except MitigationError as err:
        st.error(md(err))
        return
    if summary is None:
        st.info(f"No remedy has been tried on run **{md(ctx.run.name)}** yet ({md(MITIGATION_DIR)}/"
                f"{md(MITIGATION_SUMMARY)} is missing). Try every remedy, each audited beside the fine-tuned model:")
        st.code(MITIGATE_COMMAND.format(run=ctx.run.folder), language="bash")
        return
    variants = variants_frame(summary)
    st.subheader("What each remedy did")
    for row in variants.itertuples(index=False):
        color = VERDICT_COLORS.get(row.verdict, "gray")
        badge = f":{color}-background[{md(row.verdict.upper())}] " if row.verdict else ""
        st.markdown(f"- {badge}{md(row.sentence)}")
    st.caption(f"Candidate: the fine-tuned model (verdict {md(summary.get('candidate_verdict'))}); every model "
               f"audited together on the {md(summary.get('split'))} split with {md(summary.get('n_boot'))} bootstrap "
               f"resamples (seed {md(summary.get('seed'))}), so each difference below is paired. A variant's verdict is "
               "the release gate of its own folder (variant against the base).")
    st.dataframe(variants, hide_index=True)

    metrics = compared_metrics(summary)
    if metrics:
        st.subheader("Accuracy against each checked metric")
        labels = dict(metrics)
        key = st.selectbox("checked metric", [k for k, _ in metrics], format_func=lambda k: labels[k],
                           key="mitigation_metric")
        frame = tradeoff_frame(summary, key)
        percent = any(p.get("percent") for p in summary["points"] if p.get("key") == key)
        if frame.empty:
            st.info("No model has both overall accuracy and this metric.")
        else:
            st.altair_chart(tradeoff_chart(frame, labels[key], percent), width="stretch")
            st.caption("Points: estimates; bars: their intervals (overall accuracy across, the metric up and down).")
            runs = summary.get("candidate_training_runs") or 1
            if runs > 1:
                st.caption(f"Fine-tuned and each fine-tuning remedy were trained {md(runs)} times (--seeds): the chart "
                           "shows each one's first run; the table below compares the means over the runs.")
    st.subheader("Variant minus fine-tuned, with paired intervals")
    table = differences_frame(summary)
    if table.empty:
        st.info("No variant was audited (every remedy ended without a model).")
    else:
        st.dataframe(table, hide_index=True)
    render_variant_card(ctx, summary)


def render_variant_card(ctx: ViewContext, summary: dict) -> None:
    """The model card of the variant a reviewer picks, as it would ship with that variant's model."""
    made = [v for v in summary.get("variants", []) if v.get("status") == "ok" and v.get("folder")]
    if not made:
        return
    st.subheader("Model card of a variant")
    labels = {v["remedy"]: str(v.get("label") or v["remedy"]) for v in made}
    remedy = st.selectbox("variant", list(labels), format_func=labels.get, key="mitigation_card_variant")
    folder = ctx.run.folder / next(v["folder"] for v in made if v["remedy"] == remedy)
    if not folder.is_dir():
        st.error(f"{md(folder)}: the variant's folder is gone; run the mitigation command again to remake it.")
        return
    try:
        run = read_run(folder)
        card = render_model_card(run, choose_audit(run, summary.get("audit")))
    except ResultsError as err:
        st.error(md(err))
        return
    st.download_button("Download this variant's model-card section", card,
                       file_name=f"{ctx.run.name}-{remedy}-{MODEL_CARD_FILE}", mime="text/markdown",
                       key="download_variant_card")
    st.caption("Its verdict is the variant's own release gate (variant against the base). The same file from a shell:")
    st.code(f"python -m workbench.report {shlex.quote(str(folder))}", language="bash")
    with st.expander("Model-card section (Markdown)"):
        st.code(card, language="markdown")

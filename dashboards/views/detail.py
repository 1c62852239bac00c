"""Intersections and per-class detail: group counts, intersection accuracy, per-class recall,
confusion matrices when per-image predictions exist; cells below the minimum n are suppressed."""

from __future__ import annotations

import streamlit as st

from workbench.report import tables
from workbench.report.results import PREDICTIONS_FILE
from workbench.report.text import format_estimate, format_value
from views import charts
from views.common import ViewContext, md, need_attribute, need_audit


def _cell_text(value: float, n: int, suppressed: bool) -> str:
    # Two lines: on one line "38.1% (n=407)" is wider than a heatmap cell in a third of the page.
    return f"n={n} (hidden)" if suppressed else f"{format_value(value, percent=True)}\nn={n}"


def render(ctx: ViewContext) -> None:
    st.header("Intersections and per-class detail")
    if not (need_audit(ctx) and need_attribute(ctx)):
        return
    table = ctx.audit.table
    min_n = ctx.audit.min_group_size
    roles = ctx.audit.roles
    st.caption(f"Attribute **{md(ctx.attribute)}** (pick another, or an intersection a*b, in the sidebar). "
               + (f"Values of groups with fewer than {min_n} images are hidden; their counts stay."
                  if min_n else "The audit set no minimum group size."))
    acc = tables.group_accuracy(table, ctx.attribute)
    acc = acc[acc["model"].isin(roles)]
    if acc.empty:
        st.info(f"No per-group rows for **{md(ctx.attribute)}**.")
        return
    suppressed = acc["status"].eq("small_group") | ((acc["n"] < min_n) if min_n else False)
    acc = acc.assign(suppressed=suppressed, shown=acc["value"].where(~suppressed),
                     text=[_cell_text(v, n, s) for v, n, s in zip(acc["value"], acc["n"], suppressed)])
    left, right = st.columns([2, 3])
    with left:
        st.subheader("Images per group")
        counts = acc.drop_duplicates("group")[["group", "n"]]
        st.altair_chart(charts.count_bars(counts, min_n), width="stretch")
    with right:
        st.subheader("Accuracy per group")
        if tables.is_intersection(ctx.attribute):
            first, second = ctx.attribute.split("*", 1)
            parts = acc["group"].str.split("*", n=1, expand=True)
            grid = acc.assign(**{first: parts[0], second: parts[1] if parts.shape[1] > 1 else ""})
            cols = st.columns(len(roles))
            for col, role in zip(cols, roles):
                with col:
                    st.altair_chart(charts.cell_heatmap(grid[grid["model"] == role], second, first, "shown", "text",
                                                        "fine-tuned" if role == "tuned" else role, title_chars=16),
                                    width="stretch")
        else:
            st.altair_chart(charts.cell_heatmap(acc, "model", "group", "shown", "text", ""), width="stretch")
    shown = acc.assign(accuracy=[("hidden" if s else format_estimate(v, lo, hi, percent=True))
                                 for v, lo, hi, s in zip(acc["value"], acc["ci_low"], acc["ci_high"], acc["suppressed"])])
    st.dataframe(shown[["model", "group", "n", "accuracy", "status"]], hide_index=True, width="stretch")

    st.subheader("Per-class recall")
    per_class = tables.class_accuracy(table, ctx.attribute, min_n)
    per_class = per_class[per_class["model"].isin(roles)]
    if per_class.empty:
        st.info(f"The audit computed no per-class rows for **{md(ctx.attribute)}**.")
    else:
        per_class = per_class.assign(text=[_cell_text(v, n, s) for v, n, s in
                                           zip(per_class["value"], per_class["n"], per_class["suppressed"])])
        # One above the other, each the page's width: side by side, a column per group (and one
        # for all images) left cells narrower than their "98.7%" once class names took their share.
        for role in roles:
            st.altair_chart(charts.cell_heatmap(per_class[per_class["model"] == role], "group", "label", "value",
                                                "text", "fine-tuned" if role == "tuned" else role), width="stretch")
    fairness = tables.classification_fairness(table, ctx.attribute)
    if len(fairness):
        st.subheader("One-vs-rest fairness per class")
        st.dataframe(fairness.assign(value=[format_estimate(v, lo, hi, percent=True) for v, lo, hi in
                                            zip(fairness["value"], fairness["ci_low"], fairness["ci_high"])])
                     [["model", "metric", "label", "value", "n", "status"]], hide_index=True, width="stretch")

    st.subheader("Confusion matrices per group")
    predictions = ctx.audit.predictions
    if predictions is None:
        st.info(f"Confusion matrices need per-image predictions ({PREDICTIONS_FILE} with columns model, row, "
                "label, predicted and the group columns) beside the results; this audit did not write them. "
                "Per-class recall above is computed from the results table.")
        return
    confusion = tables.confusion_matrices(predictions, ctx.attribute, min_n)
    if confusion.empty:
        st.info("No group is large enough (or the predictions lack this attribute's columns).")
        return
    role = st.radio("model", sorted(confusion["model"].unique()), horizontal=True, key="confusion_model")
    mine = confusion[confusion["model"] == role]
    groups = sorted(mine["group"].unique())
    # Two a row: class names label both axes, and a third of the page left no room for the cells.
    cols = st.columns(min(2, len(groups)))
    for i, group in enumerate(groups):
        cells = mine[mine["group"] == group].assign(text=lambda f: f["count"].astype(str))
        with cols[i % len(cols)]:
            st.altair_chart(charts.cell_heatmap(cells.assign(share=cells["count"] / cells["group_n"]), "predicted",
                                                "label", "share", "text", f"{group} (n={int(cells['group_n'].iloc[0])})",
                                                title_chars=24), width="stretch")

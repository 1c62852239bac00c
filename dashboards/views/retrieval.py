"""Caption retrieval and AUC per group: Recall@k of search by text and by image for base and fine-tuned,
the worst-over-best ratio and the changes; per-class AUC per group with the equity-scaled AUC.

The tables are the report's (workbench.report.retrieval_auc), so the page and report.html agree.
"""

from __future__ import annotations

import streamlit as st

from workbench.report import retrieval_auc, tables
from views.common import ViewContext, md, need_attribute, need_audit, single_model_notice

RETRIEVAL_METRICS = ("retrieval_recall", "retrieval_mean_rank")


def render(ctx: ViewContext) -> None:
    st.header("Caption retrieval and AUC per group")
    if not (need_audit(ctx) and need_attribute(ctx)):
        return
    if not ctx.audit.compares:
        single_model_notice(ctx)
    retrieval_section(ctx)
    auc_section(ctx)


def retrieval_section(ctx: ViewContext) -> None:
    table = ctx.audit.table
    st.subheader("Caption retrieval: Recall@k per group")
    if not retrieval_auc.has_retrieval(table):
        reasons = retrieval_auc.skipped_reasons(table, RETRIEVAL_METRICS)
        st.info("The audit computed no caption retrieval" + (f": {md(reasons[0])}" if reasons else "."))
        return
    st.caption("Each image and its caption form a query pair. Image → text: the image searches every distinct "
               "caption of the split; text → image: the caption searches every image. Recall@k is the share of a "
               "group's query pairs whose match is in the top k (Wilson interval); a difference is the group's "
               "Recall@k minus the reference group's (Newcombe interval); the change is fine-tuned minus base on "
               "the same resamples. The gallery is always the whole split.")
    directions = tables.retrieval_directions(table)
    ks = tables.retrieval_ks(table)
    left, right = st.columns(2)
    direction = left.radio("direction", directions, horizontal=True, key="retrieval_direction",
                           format_func=lambda d: tables.RETRIEVAL_DIRECTION_WORDS.get(d, d))
    k = right.selectbox("k (Recall@k)", ks, key="retrieval_k")
    recall = retrieval_auc.recall_table(table, ctx.attribute, direction, k)
    raw = tables.retrieval_recall(table, ctx.attribute, direction, k)
    reference = retrieval_auc.recall_reference(raw) if len(raw) else None
    if recall.empty:
        st.info(f"No Recall@{k} rows for **{md(ctx.attribute)}**, direction {md(direction)}.")
    else:
        st.markdown(f"**Recall@{k}, {md(tables.RETRIEVAL_DIRECTION_WORDS.get(direction, direction))}, by "
                    f"{md(ctx.attribute)}** (change: fine-tuned − base; group − {md(reference or 'reference')}: the "
                    "group's Recall@k minus the reference group's, per model)")
        st.dataframe(recall, hide_index=True, width="stretch", height=table_height(len(recall)))
        for _, r in raw[raw["confirmed"]].iterrows():
            st.warning(f"Recall@{k} of **{md(retrieval_auc.group_label(r['group']))}** ({md(ctx.attribute)}, "
                       f"{md(direction)}, n={int(r['n'])}) fell after fine-tuning: the whole interval of the change "
                       "is below 0.")
    ratio = retrieval_auc.min_ratio_table(table, ctx.attribute)
    if len(ratio):
        st.markdown(f"**Worst group's Recall@k over the best group's, by {md(ctx.attribute)}** (1 = equal; "
                    "percentile interval of the resamples)")
        st.dataframe(ratio, hide_index=True, width="stretch", height=table_height(len(ratio)))
    rank = retrieval_auc.mean_rank_table(table, ctx.attribute, direction)
    if len(rank):
        with st.expander(f"Mean rank of the match, {direction} (1 = always first; lower is better)"):
            st.dataframe(rank, hide_index=True, width="stretch", height=table_height(len(rank)))


def table_height(rows: int) -> int:
    """Pixels that show every row of a st.dataframe without its own scroll bar (35 px a row, header included)."""
    return 35 * (rows + 1) + 3


def auc_section(ctx: ViewContext) -> None:
    table = ctx.audit.table
    st.subheader("AUC per class and group, equity-scaled AUC")
    if not retrieval_auc.has_auc(table):
        reasons = retrieval_auc.skipped_reasons(table, ("auc",))
        st.info("The audit computed no AUC" + (f": {md(reasons[0])}" if reasons else "."))
        return
    st.caption("One-vs-rest ROC AUC of each class from the zero-shot scores, over all images and within each group "
               "(percentile intervals of the audit's bootstrap). ES-AUC = AUC / (1 + Σ over groups |AUC of the group "
               "− AUC|) (Luo et al. 2024): it equals the AUC when every group's AUC is the same and falls as they "
               "spread. Laid out like the Harvard-FairVLMed tables.")
    frame = retrieval_auc.auc_table(table, ctx.attribute, ctx.audit.roles)
    if frame.empty:
        st.info(f"No AUC rows for **{md(ctx.attribute)}**.")
        return
    st.markdown(f"**AUC per class, by {md(ctx.attribute)}** (change: fine-tuned − base)")
    st.dataframe(frame, hide_index=True, width="stretch", height=table_height(len(frame)))

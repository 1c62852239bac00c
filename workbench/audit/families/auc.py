"""Medical fairness family: per-group AUC per class and equity-scaled AUC (Luo et al., FairCLIP, CVPR 2024).

What the remedy literature on Harvard-FairVLMed reports, so results compare with its tables:

- ``auc``: one-vs-rest ROC AUC of each class from the zero-shot scores, overall
  (group OVERALL) and within each group of every attribute and intersection;
- ``es_auc``: equity-scaled AUC of each class per attribute,
  ES-AUC = AUC / (1 + sum over groups |AUC_g - AUC|).

Scores: the softmax over the classes of 100 x the cosine similarity between the image and
each class's ensembled prompt embedding (100 is CLIP's logit scale at its clamp, where
pretrained CLIPs sit), ranked through its logarithm so that confident probabilities do not
round to 1.0 and tie. With two classes the ranking, hence the AUC, is that of the
similarity difference and does not depend on the scale (FairCLIP's glaucoma task).

Ties count one half. Intervals are percentile intervals of the audit's shared stratified
bootstrap: each resample's AUC is the weighted AUC with the resample's row multiplicities
as sample weights (equal to ``sklearn.metrics.roc_auc_score(..., sample_weight=w)``),
computed for all resamples at once from one sort of the scores.
"""

from __future__ import annotations

import numpy as np

from workbench import schema
from workbench.audit.context import ModelContext, drop_point_row
from workbench.audit.families.accuracy import class_embeddings, class_prompts
from workbench.audit.families.base import Family, MetricInfo

# CLIP's logit scale at its clamp (ln 100): the temperature of the zero-shot softmax.
SCORE_SCALE = 100.0

METRICS = (
    MetricInfo("auc", "one-vs-rest ROC AUC of class `label` from zero-shot softmax scores, overall or per group",
               "lower_is_worse"),
    MetricInfo("es_auc", "equity-scaled AUC of class `label`: AUC / (1 + sum over groups |AUC_g - AUC|), per "
               "attribute (group '')", "lower_is_worse"),
)


def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of ``scores`` for the rows where ``positive`` is true, once per row of ``weights``.

    Parameters
    ----------
    scores : array of shape (N,)
    positive : array of bool, shape (N,)
    weights : array of shape (B, N)
        Sample weights (bootstrap multiplicities), one row per resample.

    Returns
    -------
    array of float, shape (B,)
        sum over positive i, negative j of w_i w_j ([s_i > s_j] + [s_i = s_j] / 2), divided by
        (sum of positive weights) x (sum of negative weights); NaN where either sum is 0.

    Examples
    --------
    >>> weighted_auc(np.array([0.9, 0.4, 0.6, 0.1]), np.array([True, True, False, False]), np.ones((1, 4))).tolist()
    [0.75]
    """
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    return auc_of_row_weights(scores, positive, weights.T)


def auc_of_row_weights(scores: np.ndarray, positive: np.ndarray, row_weights: np.ndarray) -> np.ndarray:
    """:func:`weighted_auc` with the weights as (N, B): rows x resamples (the audit transposes once)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    # Equal scores form one tie block; block k spans sorted positions starts[k] .. ends[k].
    new_block = np.r_[True, sorted_scores[1:] != sorted_scores[:-1]]
    # Rows x resamples: the running sums go down the rows, contiguous for every resample at once.
    w = np.asarray(row_weights, dtype=np.float64)[order]
    pos = positive[order]
    w_neg = w * ~pos[:, None]
    neg_below = np.cumsum(w_neg, axis=0)  # negative weight up to and including each sorted row
    if new_block.all():
        # No tied scores (the usual case for continuous scores): every row is its own block,
        # so a positive row's credit is the negative weight below it; its own w_neg is 0.
        credit_pos = neg_below[pos]
    else:
        starts = np.flatnonzero(new_block)
        ends = np.r_[starts[1:], scores.size] - 1
        block = np.cumsum(new_block) - 1
        neg_tied = np.add.reduceat(w_neg, starts, axis=0)
        credit = neg_below[ends] - 0.5 * neg_tied  # below the block, plus half of the ties
        credit_pos = credit[block[pos]]
    num = np.einsum("nb,nb->b", w[pos], credit_pos)
    den = w[pos].sum(axis=0) * w_neg.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.nan)


def equity_scaled_auc(overall: np.ndarray, by_group: np.ndarray) -> np.ndarray:
    """ES-AUC = AUC / (1 + sum over groups |AUC_g - AUC|) per resample (Luo et al. 2024).

    ``overall`` (B,), ``by_group`` (B, G); NaN where any group's AUC is NaN.

    Examples
    --------
    >>> equity_scaled_auc(np.array([0.8]), np.array([[0.9, 0.7]])).round(6).tolist()
    [0.666667]
    """
    overall = np.asarray(overall, dtype=np.float64)
    spread = np.abs(np.asarray(by_group, dtype=np.float64) - overall[:, None]).sum(axis=1)
    return overall / (1.0 + spread)


def zero_shot_scores(image: np.ndarray, class_vectors: np.ndarray) -> np.ndarray:
    """(N, C) log of the softmax over classes of ``SCORE_SCALE`` x cosine similarity (rows L2-normalised).

    The logarithm ranks images exactly as the softmax probability does (so the AUC is that of
    the probability), but stays distinct where confident probabilities round to 1.0 in
    float64 and would tie: log p_c = -log1p(sum over j != c of exp(s_j - s_c)).
    """
    logits = SCORE_SCALE * (np.asarray(image, dtype=np.float64) @ np.asarray(class_vectors, dtype=np.float64).T)
    out = np.empty_like(logits)
    for c in range(logits.shape[1]):
        others = np.delete(logits, c, axis=1) - logits[:, c : c + 1]
        out[:, c] = -np.log1p(np.exp(others).sum(axis=1))
    return out


def compute(ctx: ModelContext) -> None:
    role, col, labels = ctx.role, ctx.collector, ctx.labels
    problem = ctx.label_problem or ctx.class_problem
    if problem:
        col.skip(role, "auc", problem, group=schema.OVERALL)
        return
    scores = zero_shot_scores(ctx.image, np.stack(class_embeddings(ctx, labels)))
    index = {c: i for i, c in enumerate(labels)}
    truth = np.array([index[c] for c in ctx.table["label"].astype(str)])
    n = ctx.n
    row_weights = np.ascontiguousarray(ctx.weights.T, dtype=np.float64)  # (N, B+1), transposed once
    for ci, c in enumerate(labels):
        positive = truth == ci
        n_pos = int(positive.sum())
        if n_pos in (0, n):
            col.skip(role, "auc", f"class {c!r} has {'no' if n_pos == 0 else 'only'} images, so its AUC is undefined",
                     group=schema.OVERALL, label=c)
            continue
        overall = auc_of_row_weights(scores[:, ci], positive, row_weights)
        col.add(role, "auc", overall[0], drop_point_row(overall), group=schema.OVERALL, label=c, n=n)
        for v in ctx.views:
            _group_rows(ctx, v, c, scores[:, ci], positive, overall, row_weights)


def _group_rows(ctx: ModelContext, view, label: str, scores: np.ndarray, positive: np.ndarray,
                overall: np.ndarray, row_weights: np.ndarray) -> None:
    role, col = ctx.role, ctx.collector
    by_group = np.full((ctx.weights.shape[0], len(view.groups)), np.nan)
    undefined, small = [], []
    for gi, g in enumerate(view.groups):
        rows = view.codes == gi
        size, n_pos = int(rows.sum()), int(positive[rows].sum())
        if n_pos in (0, size):
            undefined.append(g)
            col.skip(role, "auc", f"group {g!r} has {'no' if n_pos == 0 else 'only'} images of class {label!r}, "
                     "so its AUC is undefined", attribute=view.name, group=g, label=label)
            continue
        by_group[:, gi] = auc_of_row_weights(scores[rows], positive[rows], row_weights[rows])
        status, note = col.size_status(size)
        if status != "ok":
            small.append(g)
        col.add(role, "auc", by_group[0, gi], drop_point_row(by_group[:, gi]), attribute=view.name, group=g,
                label=label, n=size, status=status, note=note)
    if undefined:
        col.skip(role, "es_auc", f"AUC is undefined in groups {undefined} (no images of class {label!r}, or only such "
                 "images)", attribute=view.name, label=label)
        return
    status, note = ("small_group", f"groups below min_group_size: {small}") if small else ("ok", "")
    es = equity_scaled_auc(overall, by_group)
    col.add(role, "es_auc", es[0], drop_point_row(es), attribute=view.name, label=label, n=ctx.n, status=status,
            note=note)


FAMILY = Family(name="auc", metrics=METRICS, prompts=class_prompts, compute=compute)

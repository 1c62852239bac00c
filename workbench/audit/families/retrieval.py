"""Caption retrieval family: does search by text (and by image) work equally well for every group?

For data with captions (one per image; the runner puts them in the table's ``caption``
column) each row is a query pair (image, its caption), in both directions:

- **image to text**: the image queries the gallery of the split's *distinct* caption texts;
  its match is its own caption text. Rows that share a caption text share that one
  gallery entry, so an identical caption never competes with itself.
- **text to image**: the caption queries the gallery of *every* image of the split; its
  match is its own image, ranked against the images whose caption differs. Images that
  carry the very same caption text are equally good answers and are left out of that
  ranking rather than counted against it.

The gallery is always the whole audited split (every group), and a group's rows are the
queries of that group: "when a clinician searches with the captions of dark-skin images,
does the right image come up?" Ranks are 1-based and ties count against the query (an
item scoring exactly as high as the match ranks ahead of it), so a collapsed embedding
scores as badly as possible, never as well.

Reported per direction and k in (1, 5, 10): Recall@k and the mean rank, overall, per group
and per intersection, the difference of each group's Recall@k from the reference group's,
and the worst group's Recall@k over the best group's within each attribute. The bootstrap
resamples the query pairs (image and caption together) with the shared stratified
weights, while the gallery stays the whole split; base and tuned are paired through the
same weights, so their deltas come from the core's delta machinery. Recall@k is a share of
queries and gets the Wilson score interval (a difference: Newcombe's), like accuracy; mean
rank and the ratio get the percentile interval of the resamples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from workbench import schema
from workbench.audit.context import ModelContext, View, drop_point_row
from workbench.audit.families.base import Family, MetricInfo
from workbench.audit.intervals import newcombe_interval, wilson_interval
from workbench.audit.metrics import group_rates_weighted

if TYPE_CHECKING:
    from workbench.audit.spec import AuditSpec

# The table column holding each row's caption (the runner copies the data's caption column into it).
CAPTION_COLUMN = "caption"
RECALL_KS: tuple[int, ...] = (1, 5, 10)
IMAGE_TO_TEXT = "image_to_text"
TEXT_TO_IMAGE = "text_to_image"
# Rows of the similarity matrix handled at once: bounds memory at (chunk x gallery) floats.
_CHUNK = 1024

METRICS = (
    MetricInfo("retrieval_recall", "Recall@k of caption retrieval (label: image_to_text or text_to_image): share of a "
               "group's query pairs whose match ranks in the top k of the whole split's gallery", "lower_is_worse",
               "share"),
    MetricInfo("retrieval_recall_difference", "group Recall@k minus the reference group's Recall@k (same direction "
               "and k)", "lower_is_worse", "share"),
    MetricInfo("retrieval_recall_min_ratio", "worst over best group Recall@k within an attribute (group '')",
               "lower_is_worse"),
    MetricInfo("retrieval_mean_rank", "mean rank (1 = first) of the match over a group's query pairs, whole-split "
               "gallery", "higher_is_worse"),
)


def caption_texts(table: pd.DataFrame) -> list[str]:
    """The distinct non-empty captions of ``table``, in order of first appearance: the text gallery."""
    if CAPTION_COLUMN not in table.columns:
        return []
    return [c for c in dict.fromkeys(table[CAPTION_COLUMN].astype(str)) if c.strip()]


def _no_spec_prompts(spec: AuditSpec, class_labels: Sequence[str] | None) -> list[str]:
    return []


def data_caption_prompts(spec: AuditSpec, table: pd.DataFrame) -> list[str]:
    """Every distinct caption, encoded once per model with the audit's other texts."""
    return caption_texts(table)


def image_to_text_ranks(similarity: np.ndarray, match: np.ndarray) -> np.ndarray:
    """Rank (1-based, ties against the query) of each row's matching column.

    ``similarity`` is (queries, gallery); ``match[i]`` the gallery index of query i's match.

    >>> image_to_text_ranks(np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.3]]), np.array([0, 1])).tolist()
    [1, 2]
    """
    similarity = np.asarray(similarity)
    own = similarity[np.arange(len(match)), match]
    return (similarity >= own[:, None]).sum(axis=1).astype(np.int64)


def text_to_image_ranks(similarity: np.ndarray, caption_index: np.ndarray) -> np.ndarray:
    """Rank of each row's image for its caption among the images whose caption differs.

    ``similarity`` is (images, distinct captions); ``caption_index[i]`` the column of row i's
    caption. Rank = 1 + number of images with another caption scoring at least as high.

    >>> sim = np.array([[0.9, 0.0], [0.8, 0.2], [0.95, 0.1]])
    >>> text_to_image_ranks(sim, np.array([0, 0, 1])).tolist()
    [2, 2, 2]
    """
    similarity = np.asarray(similarity)
    ranks = np.zeros(len(caption_index), dtype=np.int64)
    # A negative index marks a row whose caption is not a column here: it only ever competes.
    for u in np.unique(caption_index[caption_index >= 0]):
        relevant = caption_index == u
        others = np.sort(similarity[~relevant, u])
        own = similarity[relevant, u]
        ranks[relevant] = 1 + others.size - np.searchsorted(others, own, side="left")
    return ranks


def retrieval_ranks(image: np.ndarray, captions: np.ndarray, caption_index: np.ndarray) -> dict[str, np.ndarray]:
    """Both directions' ranks for query pairs (image row i, caption ``captions[caption_index[i]]``).

    ``image`` (N, D) and ``captions`` (U, D) are L2-normalised; the similarity matrix is built in
    row chunks so an (N, U) matrix of a large split never sits in memory at once.
    """
    n = image.shape[0]
    i2t = np.zeros(n, dtype=np.int64)
    for start in range(0, n, _CHUNK):
        block = image[start:start + _CHUNK] @ captions.T
        i2t[start:start + _CHUNK] = image_to_text_ranks(block, caption_index[start:start + _CHUNK])
    # Text to image, vectorised over a chunk of query rows (text_to_image_ranks is the per-caption
    # reference): every image against each query's caption, minus the images sharing that caption.
    t2i = np.zeros(n, dtype=np.int64)
    step = max(1, _CHUNK // 4)  # (N, step) scores and masks at once
    for start in range(0, n, step):
        rows = np.arange(start, min(start + step, n))
        scores = image @ captions[caption_index[rows]].T  # (N, rows)
        own = scores[rows, np.arange(rows.size)]
        competing = caption_index[:, None] != caption_index[rows][None, :]
        t2i[rows] = 1 + ((scores >= own[None, :]) & competing).sum(axis=0)
    return {IMAGE_TO_TEXT: i2t, TEXT_TO_IMAGE: t2i}


def _weighted_means(values: np.ndarray, members: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B+1, G) weighted mean of ``values`` in each column of ``members``, row 0 being the unweighted data.

    The resamples are float32 matrix products (a float64 copy of a 1000 x 50k weight matrix
    would be 400 MB per call); row 0, the reported estimate, is recomputed exactly in float64.
    """
    members = np.asarray(members, dtype=np.float32)
    values = np.asarray(values, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float32)
    num = (weights @ (members * values.astype(np.float32)[:, None])).astype(np.float64)
    den = (weights @ members).astype(np.float64)
    num[0] = values @ members.astype(np.float64)
    den[0] = members.astype(np.float64).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def compute(ctx: ModelContext) -> None:
    role, col, table = ctx.role, ctx.collector, ctx.table
    if CAPTION_COLUMN not in table.columns:
        col.skip(role, "retrieval_recall", "the audited data has no captions (the runner reads the data's caption "
                 "column, default 'caption'; set --caption-column); caption retrieval is not computed",
                 group=schema.OVERALL)
        return
    texts = caption_texts(table)
    if len(texts) < 2:
        col.skip(role, "retrieval_recall", f"caption retrieval needs at least two distinct captions, the data has "
                 f"{len(texts)}", group=schema.OVERALL)
        return
    missing = [t for t in texts if t not in ctx.text]
    if missing:
        # A caller of compute_audit that passed a caption column must pass its embeddings too
        # (core.group_prompts_needed lists them); say so instead of failing the whole audit.
        col.skip(role, "retrieval_recall", f"{len(missing)} of {len(texts)} captions have no text embedding "
                 f"(first: {missing[0]!r}); embed every text of group_prompts_needed(spec, table)",
                 group=schema.OVERALL)
        return
    captions = table[CAPTION_COLUMN].astype(str).to_numpy()
    has_caption = np.array([c.strip() != "" for c in captions])
    index = {t: i for i, t in enumerate(texts)}
    # Rows without a caption are neither queries nor gallery items (their image leaves the image gallery too).
    rows = np.flatnonzero(has_caption)
    caption_index = np.array([index[c] for c in captions[rows]], dtype=np.int64)
    gallery = np.stack([np.asarray(ctx.text[t], dtype=np.float32) for t in texts])
    ranks_sub = retrieval_ranks(ctx.image[rows], gallery, caption_index)
    n_missing = int((~has_caption).sum())
    missing_note = f"{n_missing} row(s) without a caption left out" if n_missing else ""
    gallery_sizes = {IMAGE_TO_TEXT: len(texts), TEXT_TO_IMAGE: len(rows)}
    level = ctx.spec.bootstrap.level
    weights = ctx.weights

    overall = View(name="", codes=np.zeros(ctx.n, dtype=np.int64), groups=[schema.OVERALL], reference=0,
                   sizes=np.array([ctx.n]))
    for direction in (IMAGE_TO_TEXT, TEXT_TO_IMAGE):
        ranks = np.zeros(ctx.n, dtype=np.float64)
        ranks[rows] = ranks_sub[direction]
        for view in [overall, *ctx.views]:
            members = view.members * has_caption[:, None]
            _add_view_rows(ctx, view, members, ranks, direction, gallery_sizes[direction], missing_note, level,
                           weights)


def _add_view_rows(ctx: ModelContext, view: View, members: np.ndarray, ranks: np.ndarray, direction: str,
                   gallery_size: int, missing_note: str, level: float, weights: np.ndarray) -> None:
    role, col = ctx.role, ctx.collector
    is_overall = view.name == ""
    sizes = members.sum(axis=0).astype(int)
    mean_rank = _weighted_means(ranks, members, weights)
    for gi, g in enumerate(view.groups):
        if sizes[gi] == 0:
            col.skip(role, "retrieval_mean_rank", f"no query pairs with a caption in group {g!r}",
                     attribute=view.name, group=g, label=direction)
            continue
        status, note = ("ok", "") if is_overall else col.size_status(int(sizes[gi]))
        col.add(role, "retrieval_mean_rank", mean_rank[0, gi], drop_point_row(mean_rank[:, gi]), attribute=view.name,
                group=g, label=direction, n=int(sizes[gi]), status=status, note=note or missing_note)
    for k in RECALL_KS:
        if k >= gallery_size:
            col.skip(role, "retrieval_recall", f"k={k} is not below the gallery size ({gallery_size}): every query "
                     "would be a hit", attribute=view.name, group=view.groups[0] if is_overall else "", label=direction,
                     k=k)
            continue
        hits = ((ranks <= k) & (members.sum(axis=1) > 0)).astype(np.float64)  # rows without a caption never hit
        rates = group_rates_weighted(hits, members, weights)  # (B+1, G)
        successes = np.rint(hits @ members)
        low, high = wilson_interval(successes, sizes, level)
        present = [gi for gi in range(len(view.groups)) if sizes[gi] > 0]
        for gi in present:
            g = view.groups[gi]
            status, note = ("ok", "") if is_overall else col.size_status(int(sizes[gi]))
            col.add(role, "retrieval_recall", rates[0, gi], drop_point_row(rates[:, gi]), attribute=view.name, group=g,
                    label=direction, k=k, n=int(sizes[gi]), status=status, note=note or missing_note,
                    interval=(low[gi], high[gi]))
        if is_overall:
            continue
        ref = view.reference
        if sizes[ref] > 0:
            diff_low, diff_high = newcombe_interval(successes, sizes, successes[ref], sizes[ref], level)
            for gi in present:
                if gi == ref:
                    continue
                status, note = col.size_status(int(sizes[gi]))
                col.add(role, "retrieval_recall_difference", rates[0, gi] - rates[0, ref],
                        drop_point_row(rates[:, gi] - rates[:, ref]), attribute=view.name, group=view.groups[gi],
                        label=direction, k=k, n=int(sizes[gi]), status=status, note=note,
                        interval=(diff_low[gi], diff_high[gi]))
        if len(present) < 2:
            col.skip(role, "retrieval_recall_min_ratio", f"{view.name!r} has fewer than two groups with captions",
                     attribute=view.name, label=direction, k=k)
            continue
        kept = rates[:, present]
        small = [view.groups[gi] for gi in present if sizes[gi] < ctx.spec.min_group_size]
        status, note = ("small_group", f"groups below min_group_size: {small}") if small else ("ok", "")
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = kept.min(axis=1) / kept.max(axis=1)
        col.add(role, "retrieval_recall_min_ratio", ratio[0], drop_point_row(ratio), attribute=view.name,
                label=direction, k=k, n=int(sizes[present].sum()), status=status, note=note)


FAMILY = Family(name="retrieval", metrics=METRICS, prompts=_no_spec_prompts, compute=compute,
                data_prompts=data_caption_prompts, list_data_prompts=False)

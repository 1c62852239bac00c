"""Fairness metrics as pure functions on arrays.

Every function here takes plain numpy arrays (group membership as integer codes
0..A-1) and returns numbers; no models, files or pandas. The ranking metrics follow
Geyik, Ambler and Kenthapadi (2019), "Fairness-Aware Ranking in Search & Recommendation
Systems with Application to LinkedIn Talent Search" (KDD), as used for CLIP by Berg et
al. (2022), "A Prompt Array Keeps the Bias Away":

- Skew_a@k = ln(p_a(k) / p*_a). A group absent from the top k is counted with share 1/k,
  as in the published reference code, so MinSkew depends on k.
- NDKL = (1/Z) sum_{i=1..K} KL(D_top-i || D*) / log2(i + 1), natural-log KL.
- Ties in a ranking are broken by row index (lower index first), so exactly k rows count.

The classification metrics follow fairlearn's definitions (demographic parity and
equalized odds differences); the WEAT effect size is Caliskan et al. (2017) applied across
modalities; multiple testing uses Holm (1979).

This file is long on purpose: every public function carries fairlearn-style documentation
with an example that the test suite runs (tests/test_audit_doctests.py); the code itself
is about 300 lines.

The ``*_weighted`` variants take a matrix of row multiplicities ``weights`` (B, N):
row ``b`` describes one bootstrap resample (row i drawn ``weights[b, i]`` times). With
``weights = ones((1, N))`` they give the plain point estimate, and with integer weights
they equal the plain function applied to the explicitly duplicated data.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

# ---------------------------------------------------------------------------------------
# rankings


def rank_order(scores: np.ndarray) -> np.ndarray:
    """Row indices sorted by score, highest first; equal scores keep the lower index first.

    Parameters
    ----------
    scores : array of shape (N,)
        One score per image (cosine similarity to a prompt); NaN is an error.

    Returns
    -------
    array of int, shape (N,)
        The ranking: ``order[0]`` is the row with the highest score.

    Examples
    --------
    >>> rank_order(np.array([0.2, 0.9, 0.2])).tolist()
    [1, 0, 2]
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"scores must be one-dimensional, got shape {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError(f"scores contain {int(np.isnan(scores).sum())} NaN values; check the embeddings")
    return np.lexsort((np.arange(scores.size), -scores))


def target_distribution(group_codes: np.ndarray, n_groups: int, target: str) -> np.ndarray:
    """Target share p*_a of each group in a fair top k.

    Parameters
    ----------
    group_codes : array of int, shape (N,)
        Group of each image, 0..n_groups-1.
    n_groups : int
        Number of groups A.
    target : {"uniform", "data"}
        ``"uniform"``: 1/A' over the A' groups that have images; ``"data"``: n_a / N.

    Returns
    -------
    array of float, shape (A,)
        Shares summing to 1 (0 for a group without images).

    Examples
    --------
    >>> target_distribution(np.array([0, 0, 0, 1]), 2, "uniform").tolist()
    [0.5, 0.5]
    >>> target_distribution(np.array([0, 0, 0, 1]), 2, "data").tolist()
    [0.75, 0.25]
    """
    counts = np.bincount(np.asarray(group_codes), minlength=n_groups).astype(np.float64)
    if target == "uniform":
        present = counts > 0
        return present / present.sum()
    if target == "data":
        return counts / counts.sum()
    raise ValueError(f"target must be 'uniform' or 'data', got {target!r}")


def _check_k(k: int, n: int) -> None:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > n:
        raise ValueError(f"k={k} is larger than the number of images ({n})")


def top_k_counts(scores: np.ndarray, group_codes: np.ndarray, n_groups: int, k: int) -> np.ndarray:
    """Number of images of each group among the k highest-scoring images.

    Parameters
    ----------
    scores : array of shape (N,)
        One score per image.
    group_codes : array of int, shape (N,)
        Group of each image, 0..n_groups-1.
    n_groups : int
        Number of groups A.
    k : int
        Top-k cut-off, 1 <= k <= N; ties at the cut-off go to the lower row index.

    Returns
    -------
    array of int, shape (A,)
        Counts summing to k.

    Examples
    --------
    >>> top_k_counts(np.array([0.9, 0.1, 0.8, 0.7]), np.array([0, 0, 1, 1]), 2, 2).tolist()
    [1, 1]
    """
    group_codes = np.asarray(group_codes)
    _check_k(k, group_codes.size)
    top = rank_order(scores)[:k]
    return np.bincount(group_codes[top], minlength=n_groups)


def _skew_from_counts(counts: np.ndarray, k: int, target: np.ndarray) -> np.ndarray:
    """ln(p_a / p*_a) with an absent group counted as one image (share 1/k); NaN where p*_a = 0."""
    share = np.maximum(counts, 1.0) / k
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(share / target)
    return np.where(target > 0, out, np.nan)


def skew_at_k(
    scores: np.ndarray, group_codes: np.ndarray, n_groups: int, k: int, target: np.ndarray
) -> np.ndarray:
    """Skew_a@k = ln(p_a(k) / p*_a) for every group a.

    Parameters
    ----------
    scores : array of shape (N,)
        One score per image (similarity to one neutral prompt).
    group_codes : array of int, shape (N,)
        Group of each image, 0..n_groups-1.
    n_groups : int
        Number of groups A.
    k : int
        Top-k cut-off, 1 <= k <= N.
    target : array of shape (A,)
        Target shares p*_a (see :func:`target_distribution`).

    Returns
    -------
    array of float, shape (A,)
        Skew per group: > 0 over-represented, < 0 under-represented in the top k. A group
        absent from the top k counts with share 1/k; NaN where the target share is 0.

    Examples
    --------
    Top 3 of groups A A B B by score: rows 0 (A), 2 (B), 3 (B).

    >>> skew_at_k(np.array([0.9, 0.1, 0.8, 0.7]), np.array([0, 0, 1, 1]), 2, 3, np.array([0.5, 0.5])).round(4).tolist()
    [-0.4055, 0.2877]
    """
    counts = top_k_counts(scores, group_codes, n_groups, k).astype(np.float64)
    return _skew_from_counts(counts, k, np.asarray(target, dtype=np.float64))


def max_min_skew(skews: np.ndarray) -> tuple[float, float]:
    """(MaxSkew, MinSkew): the largest and smallest skew over the groups that have a target share.

    Parameters
    ----------
    skews : array of shape (A,)
        Output of :func:`skew_at_k` (NaN entries are ignored).

    Returns
    -------
    (float, float)
        MaxSkew@k (how far the most over-represented group is over) and MinSkew@k.

    Examples
    --------
    >>> max_min_skew(np.array([0.2877, -0.4055, np.nan]))
    (0.2877, -0.4055)
    """
    return float(np.nanmax(skews)), float(np.nanmin(skews))


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) along the last axis, natural log, 0 ln 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / q), 0.0)
    return terms.sum(axis=-1)


def ndkl(scores: np.ndarray, group_codes: np.ndarray, n_groups: int, k: int, target: np.ndarray) -> float:
    """Normalised discounted KL divergence (NDKL) of the top-i group mix from the target, i = 1..k.

    Parameters
    ----------
    scores : array of shape (N,)
        One score per image.
    group_codes : array of int, shape (N,)
        Group of each image, 0..n_groups-1.
    n_groups : int
        Number of groups A.
    k : int
        Deepest prefix considered, 1 <= k <= N.
    target : array of shape (A,)
        Target shares p*_a.

    Returns
    -------
    float
        0 when every prefix matches the target; grows as the top of the ranking departs from it.

    Examples
    --------
    The top 2 are both group 0: KL((1, 0) || (1/2, 1/2)) = ln 2 at both depths.

    >>> round(ndkl(np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 0, 1, 1]), 2, 2, np.array([0.5, 0.5])), 4)
    0.6931
    """
    group_codes = np.asarray(group_codes)
    _check_k(k, group_codes.size)
    target = np.asarray(target, dtype=np.float64)
    top = group_codes[rank_order(scores)[:k]]
    cum = np.cumsum(np.eye(n_groups)[top], axis=0)  # (k, A) counts in the top i
    dist = cum / np.arange(1, k + 1)[:, None]
    discount = 1.0 / np.log2(np.arange(1, k + 1) + 1.0)
    return float((_kl(dist, target) * discount).sum() / discount.sum())


def ranking_metrics_weighted(
    order: np.ndarray,
    group_codes: np.ndarray,
    n_groups: int,
    ks: Sequence[int],
    targets: Sequence[np.ndarray],
    weights: np.ndarray,
    *,
    full_scan: bool = False,
    with_ndkl: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Skew and NDKL for every resample, k and target at once.

    Parameters
    ----------
    order : array of int, shape (N,)
        :func:`rank_order` of the scores. One ranking serves every resample: a row drawn
        several times appears as that many tied copies.
    group_codes : array of int, shape (N,)
        Group of each image, 0..n_groups-1.
    n_groups : int
        Number of groups A.
    ks : sequence of int
        Top-k cut-offs; each at most the number of images in every resample.
    targets : sequence of arrays of shape (A,)
        Target shares, one array per target.
    weights : array of shape (B, N)
        Row multiplicities, one row per resample (``ones((1, N))`` for the data itself).
    full_scan : bool, default False
        Scan every row of the ranking instead of the shortest sufficient prefix.
    with_ndkl : bool, default True
        False skips NDKL (its array is then all NaN): the control prompts need only skew.

    Returns
    -------
    skew : array of shape (B, len(ks), len(targets), A)
    ndkl : array of shape (B, len(ks), len(targets))

    Examples
    --------
    The data itself (top 2 = rows 0, 1, both group 0) and a resample drawing row 2 twice:

    >>> order = rank_order(np.array([0.9, 0.8, 0.7, 0.6]))
    >>> weights = np.array([[1, 1, 1, 1], [0, 0, 2, 1]])
    >>> skew, nd = ranking_metrics_weighted(order, np.array([0, 0, 1, 1]), 2, [2], [np.array([0.5, 0.5])], weights)
    >>> skew[:, 0, 0, :].round(4).tolist()
    [[0.6931, 0.0], [0.0, 0.6931]]

    Only the top ``max(ks)`` resampled positions matter, so by default only the shortest
    prefix of the ranking that holds that many resampled images in every resample is
    scanned (doubling from 4 k): O(B k) instead of O(B N) per prompt, and bit-identical
    results (``full_scan=True`` scans every row; tests and ``bench/ranking_prefix.py``
    compare the two).
    """
    return ranking_metrics_views(order, [(group_codes, n_groups, targets)], ks, weights, full_scan=full_scan,
                                 with_ndkl=with_ndkl)[0]


def ranking_metrics_views(
    order: np.ndarray,
    views: Sequence[tuple[np.ndarray, int, Sequence[np.ndarray]]],
    ks: Sequence[int],
    weights: np.ndarray,
    *,
    full_scan: bool = False,
    with_ndkl: bool = True,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`ranking_metrics_weighted` for several groupings of the same ranked images.

    ``views`` holds one ``(group_codes, n_groups, targets)`` per attribute. Which rows fill
    the top k of each resample depends on the ranking and the weights only, so that part is
    computed once and shared; the result is the list of ``(skew, ndkl)``, one per view, each
    bit-identical to :func:`ranking_metrics_weighted` on that view alone.

    Examples
    --------
    Top 2 = rows 0, 1: both group 0 by the first grouping (the absent group counts as one
    image, so its skew is ln((1/2) / (1/2)) = 0 too), one of each by the second:

    >>> order = rank_order(np.array([0.9, 0.8, 0.7, 0.6]))
    >>> by_a, by_b = ranking_metrics_views(order, [(np.array([0, 0, 1, 1]), 2, [np.array([0.5, 0.5])]),
    ...                                            (np.array([0, 1, 0, 1]), 2, [np.array([0.5, 0.5])])],
    ...                                    [2], np.ones((1, 4)))
    >>> by_a[0][0, 0, 0].round(4).tolist(), by_b[0][0, 0, 0].round(4).tolist()
    ([0.6931, 0.0], [0.0, 0.0])
    """
    order = np.asarray(order)
    weights = np.asarray(weights)
    n, kmax = len(order), max(ks)
    for k in ks:
        _check_k(k, n)
    ranked = order
    if not full_scan and n > 4 * kmax:
        m = 4 * kmax
        while True:
            head = weights[:, order[:m]]
            if m == n or head.sum(axis=1).min() >= kmax:
                break
            m = min(n, 2 * m)
        ranked = order[:m]
    else:
        head = weights[:, order]
    cum = np.cumsum(head, axis=1, dtype=np.float64)  # (B, M) resampled images up to each ranked row
    if np.any(cum[:, -1] < kmax):
        raise ValueError(f"a resample holds fewer than k={kmax} images")
    if with_ndkl:
        # NDKL needs every prefix 1..kmax: find the ranked row at each resampled position.
        counts_of = _prefix_counts(cum, kmax)
        return [_skew_and_ndkl(counts_of(np.asarray(codes)[ranked], a), ks, targets) for codes, a, targets in views]
    # Skew only needs the group counts at each k: row i contributes min(w_i, k - images
    # ranked above it) images, clipped at 0 — a (B, M) array per k shared by every view.
    above = cum - head
    taken = [np.clip(k - above, 0.0, head) for k in ks]
    out = []
    for codes, a, targets in views:
        members = np.eye(a)[np.asarray(codes)[ranked]]  # (M, A)
        skew = np.empty((head.shape[0], len(ks), len(targets), a))
        for ki, k in enumerate(ks):
            counts = taken[ki] @ members  # (B, A) exact: integer-valued float64
            for ti, target in enumerate(targets):
                skew[:, ki, ti, :] = _skew_from_counts(counts, k, np.asarray(target, dtype=np.float64)[None, :])
        out.append((skew, np.full((head.shape[0], len(ks), len(targets)), np.nan)))
    return out


def _prefix_counts(cum: np.ndarray, kmax: int):
    """From cumulative resampled counts (B, M): a function (codes (M,), A) -> (B, kmax, A) counts in the top i."""
    n_boot, n = cum.shape
    # The row at resampled position p (1-based) is the first ranked row whose cumulative
    # count reaches p. Offsetting each resample by b * (N_total + 1) lets one searchsorted
    # call serve all resamples.
    offsets = np.arange(n_boot)[:, None] * (float(cum.max()) + 1.0)
    flat_cum = (cum + offsets).ravel()
    positions = (np.arange(1, kmax + 1)[None, :] + offsets).ravel()
    rows = np.searchsorted(flat_cum, positions, side="left").reshape(n_boot, kmax) - np.arange(n_boot)[:, None] * n

    def counts_of(codes_ranked: np.ndarray, n_groups: int) -> np.ndarray:
        seq = codes_ranked[rows]  # (B, kmax) group of each of the top kmax resampled images
        onehot = np.zeros((n_boot, kmax, n_groups), dtype=np.float32)
        np.put_along_axis(onehot, seq[..., None], 1.0, axis=2)
        return np.cumsum(onehot, axis=1, dtype=np.float64)

    return counts_of


def _skew_and_ndkl(counts: np.ndarray, ks: Sequence[int], targets: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Skew at each k and NDKL up to each k from the prefix counts (B, kmax, A)."""
    n_boot, kmax, n_groups = counts.shape
    dist = counts / np.arange(1, kmax + 1)[None, :, None]
    discount = 1.0 / np.log2(np.arange(1, kmax + 1) + 1.0)
    cum_discount = np.cumsum(discount)
    skew = np.empty((n_boot, len(ks), len(targets), n_groups))
    nd = np.empty((n_boot, len(ks), len(targets)))
    for ti, target in enumerate(targets):
        target = np.asarray(target, dtype=np.float64)
        weighted_kl = np.cumsum(_kl(dist, target) * discount[None, :], axis=1)  # (B, kmax)
        for ki, k in enumerate(ks):
            skew[:, ki, ti, :] = _skew_from_counts(counts[:, k - 1, :], k, target[None, :])
            nd[:, ki, ti] = weighted_kl[:, k - 1] / cum_discount[k - 1]
    return skew, nd


# ---------------------------------------------------------------------------------------
# classification


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of rows where the prediction equals the label.

    Parameters
    ----------
    y_true, y_pred : arrays of shape (N,)
        True and predicted labels (any comparable values).

    Returns
    -------
    float
        Accuracy in [0, 1]; NaN for no rows.

    Examples
    --------
    >>> accuracy(np.array([0, 1, 1]), np.array([0, 1, 0]))
    0.6666666666666666
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.size == 0:
        return float("nan")
    return float(np.mean(y_true == y_pred))


def group_rates_weighted(hits: np.ndarray, members: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-resample rate of ``hits`` within each column of the membership matrix.

    Parameters
    ----------
    hits : array of shape (N,)
        1 where the row counts (a correct prediction, a harmful label), else 0.
    members : array of shape (N, G)
        1 where row i belongs to column g (a group, a class, a group x class cell).
    weights : array of shape (B, N)
        Row multiplicities, one row per resample.

    Returns
    -------
    array of float, shape (B, G)
        Weighted share of hits in each column; NaN where a column holds no resampled rows.

    Examples
    --------
    Groups (0, 0, 1, 1); the second resample draws row 0 twice and row 1 not at all:

    >>> group_rates_weighted(np.array([1, 0, 1, 1]), np.eye(2)[[0, 0, 1, 1]], np.array([[1, 1, 1, 1], [2, 0, 1, 1]])).tolist()
    [[0.5, 1.0], [1.0, 1.0]]
    """
    # float32 is exact here (0/1 entries, integer counts below 2**24) and several times faster.
    members = np.asarray(members, dtype=np.float32)
    hits = np.asarray(hits, dtype=np.float32)
    weights = np.asarray(weights, dtype=np.float32)
    num = (weights @ (members * hits[:, None])).astype(np.float64)
    den = (weights @ members).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def selection_rates(y_pred_binary: np.ndarray, group_codes: np.ndarray, n_groups: int) -> np.ndarray:
    """P(y_hat = 1 | group) for each group.

    Parameters
    ----------
    y_pred_binary : array of shape (N,)
        1 where the prediction is the positive class.
    group_codes : array of int, shape (N,)
        Group of each row, 0..n_groups-1.
    n_groups : int
        Number of groups.

    Returns
    -------
    array of float, shape (n_groups,)
        Selection rate per group (NaN for an empty group).

    Examples
    --------
    >>> selection_rates(np.array([1, 0, 1, 1]), np.array([0, 0, 1, 1]), 2).tolist()
    [0.5, 1.0]
    """
    members = np.eye(n_groups)[np.asarray(group_codes)]
    return group_rates_weighted(np.asarray(y_pred_binary), members, np.ones((1, len(group_codes))))[0]


def demographic_parity_difference(y_pred_binary: np.ndarray, group_codes: np.ndarray, n_groups: int) -> float:
    """Demographic parity difference: max_a P(y_hat = 1 | a) - min_a P(y_hat = 1 | a).

    Parameters
    ----------
    y_pred_binary : array of shape (N,)
        1 where the prediction is the positive class.
    group_codes : array of int, shape (N,)
        Group of each row, 0..n_groups-1.
    n_groups : int
        Number of groups; empty groups are ignored.

    Returns
    -------
    float
        0 when every group is selected at the same rate.

    Examples
    --------
    >>> demographic_parity_difference(np.array([1, 0, 1, 1]), np.array([0, 0, 1, 1]), 2)
    0.5
    """
    rates = selection_rates(y_pred_binary, group_codes, n_groups)
    return float(np.nanmax(rates) - np.nanmin(rates))


def equalized_odds_difference(
    y_true_binary: np.ndarray, y_pred_binary: np.ndarray, group_codes: np.ndarray, n_groups: int
) -> float:
    """Equalized odds difference: the larger of the TPR gap and the FPR gap across groups.

    Parameters
    ----------
    y_true_binary, y_pred_binary : arrays of shape (N,)
        1 where the true / predicted class is the positive one.
    group_codes : array of int, shape (N,)
        Group of each row, 0..n_groups-1.
    n_groups : int
        Number of groups; empty groups are ignored.

    Returns
    -------
    float
        0 when every group has the same true- and false-positive rates; NaN when a group
        has no positives or no negatives (a rate is undefined).

    Examples
    --------
    Group 0: TPR 1, FPR 1; group 1: TPR 1, FPR 0.

    >>> equalized_odds_difference(np.array([1, 0, 1, 0]), np.array([1, 1, 1, 0]), np.array([0, 0, 1, 1]), 2)
    1.0
    """
    y_true_binary = np.asarray(y_true_binary).astype(bool)
    y_pred_binary = np.asarray(y_pred_binary).astype(np.float64)
    group_codes = np.asarray(group_codes)
    present = np.bincount(group_codes, minlength=n_groups) > 0
    gaps = []
    for condition in (y_true_binary, ~y_true_binary):
        rates = selection_rates(y_pred_binary[condition], group_codes[condition], n_groups)[present]
        gaps.append(np.max(rates) - np.min(rates))  # NaN propagates: undefined rate, undefined gap
    return float(max(gaps)) if not np.isnan(gaps).any() else float("nan")


def dp_eo_weighted(
    y_true_binary: np.ndarray, y_pred_binary: np.ndarray, group_codes: np.ndarray, n_groups: int, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Demographic parity and equalized odds differences for every resample.

    Parameters
    ----------
    y_true_binary, y_pred_binary : arrays of shape (N,)
        1 where the true / predicted class is the positive one.
    group_codes : array of int, shape (N,)
        Group of each row, 0..n_groups-1.
    n_groups : int
        Number of groups; empty groups are ignored.
    weights : array of shape (B, N)
        Row multiplicities, one row per resample.

    Returns
    -------
    (dp, eo) : arrays of shape (B,)
        As :func:`demographic_parity_difference` and :func:`equalized_odds_difference`
        per resample (NaN where a rate is undefined in that resample).

    Examples
    --------
    The second resample drops row 3, group 1's only negative: its FPR, so EO, is undefined.

    >>> dp, eo = dp_eo_weighted(np.array([1, 0, 1, 0]), np.array([1, 1, 1, 0]), np.array([0, 0, 1, 1]), 2,
    ...                         np.array([[1, 1, 1, 1], [1, 1, 2, 0]]))
    >>> dp.tolist(), eo.tolist()
    ([0.5, 0.0], [1.0, nan])
    """
    group_codes = np.asarray(group_codes)
    present = np.bincount(group_codes, minlength=n_groups) > 0
    members = np.eye(n_groups)[group_codes][:, present]
    yt = np.asarray(y_true_binary).astype(bool)
    yp = np.asarray(y_pred_binary).astype(np.float64)
    sel = group_rates_weighted(yp, members, weights)
    dp = np.max(sel, axis=1) - np.min(sel, axis=1)
    tpr = group_rates_weighted(yp, members * yt[:, None], weights)
    fpr = group_rates_weighted(yp, members * (~yt)[:, None], weights)
    gap_t = np.max(tpr, axis=1) - np.min(tpr, axis=1)
    gap_f = np.max(fpr, axis=1) - np.min(fpr, axis=1)
    return dp, np.maximum(gap_t, gap_f)  # NaN stays NaN when a rate is undefined


# ---------------------------------------------------------------------------------------
# prompt-group association


def group_prompt_preference(similarity: np.ndarray, group_codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Share of each group's images whose most similar group prompt is their own group's.

    Parameters
    ----------
    similarity : array of shape (N, A)
        Cosine of each image to the prompt naming each group (column a = group a).
        Ties go to the lower column.
    group_codes : array of int, shape (N,)
        Group of each image, 0..A-1.
    n_groups : int
        Number of groups A.

    Returns
    -------
    array of float, shape (A,)
        Share per group; NaN for an empty group.

    Examples
    --------
    >>> sim = np.array([[0.3, 0.1], [0.2, 0.25], [0.1, 0.4], [0.3, 0.2]])
    >>> group_prompt_preference(sim, np.array([0, 0, 1, 1]), 2).tolist()
    [0.5, 0.5]
    """
    similarity = np.asarray(similarity)
    group_codes = np.asarray(group_codes)
    own = (np.argmax(similarity, axis=1) == group_codes).astype(np.float64)
    members = np.eye(n_groups)[group_codes]
    return group_rates_weighted(own, members, np.ones((1, len(own))))[0]


def weat_effect_size(s: np.ndarray, in_x: np.ndarray, in_y: np.ndarray) -> float:
    """WEAT effect size: (mean s over X - mean s over Y) / sample std (ddof=1) of s over X and Y.

    Parameters
    ----------
    s : array of shape (N,)
        Per-image association, e.g. cos(image, prompt naming group X) - cos(image, prompt naming Y).
    in_x, in_y : bool arrays of shape (N,)
        Disjoint masks of the two image groups.

    Returns
    -------
    float
        Standardised difference (Cohen's d-like, within [-2, 2] for equal group sizes); NaN
        with fewer than three images or no variation in ``s``.

    Examples
    --------
    >>> round(weat_effect_size(np.array([0.3, 0.2, -0.1, 0.0]), np.array([1, 1, 0, 0], bool), np.array([0, 0, 1, 1], bool)), 4)
    1.6432
    """
    s = np.asarray(s, dtype=np.float64)
    in_x, in_y = np.asarray(in_x, bool), np.asarray(in_y, bool)
    if in_x.sum() < 1 or in_y.sum() < 1 or (in_x | in_y).sum() < 3:
        return float("nan")
    sd = np.std(s[in_x | in_y], ddof=1)
    if sd == 0:
        return float("nan")
    return float((s[in_x].mean() - s[in_y].mean()) / sd)


def weat_permutation_p_value(
    s: np.ndarray, in_x: np.ndarray, in_y: np.ndarray, *, n_perm: int = 10000, seed: int = 0
) -> float:
    """Two-sided permutation p-value of the X-vs-Y mean difference of s.

    Parameters
    ----------
    s : array of shape (N,)
        Per-image association (as for :func:`weat_effect_size`).
    in_x, in_y : bool arrays of shape (N,)
        Disjoint masks of the two image groups.
    n_perm : int, default 10000
        Random permutations when there are more distinct assignments than this.
    seed : int, default 0
        Seed of the random permutations.

    Returns
    -------
    float
        p-value in (0, 1]; NaN when a group is empty.

    Examples
    --------
    Two images per group: 6 assignments, 2 of them as extreme as the observed one.

    >>> weat_permutation_p_value(np.array([0.3, 0.2, -0.1, 0.0]), np.array([1, 1, 0, 0], bool), np.array([0, 0, 1, 1], bool))
    0.3333333333333333

    Permutations reassign the pooled images to X and Y with the group sizes fixed. When
    there are at most ``n_perm`` distinct assignments all are enumerated (exact p, the
    observed one included); otherwise ``n_perm`` random ones with the (1 + hits) / (1 + n)
    correction. The effect size's denominator is the same under every permutation, so the
    mean difference is an equivalent statistic.
    """
    s = np.asarray(s, dtype=np.float64)
    in_x, in_y = np.asarray(in_x, bool), np.asarray(in_y, bool)
    if (in_x & in_y).any():
        raise ValueError("X and Y overlap; WEAT needs disjoint image groups")
    nx, n = int(in_x.sum()), int((in_x | in_y).sum())
    if nx < 1 or n - nx < 1:
        return float("nan")
    # Order the pooled values as X then Y so the observed split is "first nx".
    pooled = np.concatenate([s[in_x], s[in_y]])
    total = pooled.sum()

    def diff(sum_x: np.ndarray) -> np.ndarray:
        return sum_x / nx - (total - sum_x) / (n - nx)

    observed = abs(diff(pooled[:nx].sum()))
    tol = 1e-12 * max(1.0, abs(observed))
    if math.comb(n, nx) <= n_perm:
        idx = np.array(list(itertools.combinations(range(n), nx)))
        stats = np.abs(diff(pooled[idx].sum(axis=1)))
        return float(np.mean(stats >= observed - tol))
    rng = np.random.default_rng(seed)
    hits = 0
    # Blocks of at most ~4 M keys (32 MB) whatever n is: a 1000 x 33k block of permutations took
    # 800 MB with its copies.
    block = max(1, min(1000, (1 << 22) // n))
    for start in range(0, n_perm, block):
        chosen = _random_subsets(rng, min(block, n_perm - start), n, nx)
        hits += int(np.sum(np.abs(diff(chosen @ pooled)) >= observed - tol))
    return float((1 + hits) / (1 + n_perm))


def _random_subsets(rng: np.random.Generator, m: int, n: int, size: int) -> np.ndarray:
    """(m, n) float64 0/1 rows, each a uniformly random subset of ``size`` of n positions.

    The ``size`` smallest of n independent uniform keys form a uniformly random subset (every
    subset is equally likely by symmetry). One partition per row is 2-3x faster than shuffling
    the whole row, and only the subset's indicator is needed. A row whose cut-off key is tied
    (probability about n^2 2^-54) is drawn again.
    """
    out = np.empty((m, n))
    todo = np.arange(m)
    while todo.size:
        keys = rng.random((todo.size, n))
        cut = np.partition(keys, size - 1, axis=1)[:, size - 1 : size]
        chosen = keys <= cut
        ok = chosen.sum(axis=1) == size
        out[todo[ok]] = chosen[ok]
        todo = todo[~ok]
    return out


# ---------------------------------------------------------------------------------------
# harmful labels


def harmful_rates(
    predicted: np.ndarray, harmful: np.ndarray, group_codes: np.ndarray, n_groups: int
) -> np.ndarray:
    """Share of each group's images whose top label is a harmful one.

    Parameters
    ----------
    predicted : array of int, shape (N,)
        Index of each image's top label in the mixed label set (classes + harmful labels).
    harmful : bool array of shape (L,)
        True for the harmful labels of that label set.
    group_codes : array of int, shape (N,)
        Group of each image, 0..n_groups-1.
    n_groups : int
        Number of groups.

    Returns
    -------
    array of float, shape (n_groups,)
        Harmful-label rate per group (NaN for an empty group).

    Examples
    --------
    Labels (cat, dog, rock) with rock harmful; one image of each group lands on rock.

    >>> harmful_rates(np.array([0, 2, 1, 2]), np.array([False, False, True]), np.array([0, 0, 1, 1]), 2).tolist()
    [0.5, 0.5]
    """
    hits = np.asarray(harmful, bool)[np.asarray(predicted)].astype(np.float64)
    members = np.eye(n_groups)[np.asarray(group_codes)]
    return group_rates_weighted(hits, members, np.ones((1, hits.size)))[0]


# ---------------------------------------------------------------------------------------
# multiple testing


def holm_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values: family-wise error control over the valid entries.

    Parameters
    ----------
    p_values : sequence of float
        Raw p-values; NaN entries (tests that could not be run) are left out of the family.

    Returns
    -------
    array of float
        Adjusted p-values in the input order; NaN entries stay NaN.

    Examples
    --------
    >>> holm_adjust([0.01, 0.04, 0.03, float("nan")]).round(4).tolist()
    [0.03, 0.06, 0.06, nan]
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adjusted)
    return out

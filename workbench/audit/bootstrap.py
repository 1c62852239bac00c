"""Stratified, paired bootstrap as a matrix of row multiplicities.

A resample is stored as how many times each row is drawn (``weights[b, i]``), which
turns every rate into a matrix product and lets one resample matrix serve every metric
and every model: base and tuned see the same resampled rows, so their difference gets
an interval of its own (a paired bootstrap).

Rows are resampled within strata (the intersection of all audited group columns), so
every group keeps its size in every resample and a small group never vanishes.
"""

from __future__ import annotations

import warnings

import numpy as np


def stratified_bootstrap_weights(strata: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, N) float32 draw counts; each stratum's counts sum to its size in every row."""
    strata = np.asarray(strata)
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    n = strata.size
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_boot, n), dtype=np.float32)
    # np.unique sorts, so the stream of random draws does not depend on row order within strata labels.
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        m = members.size
        draws = rng.integers(0, m, size=(n_boot, m))
        flat = (draws + np.arange(n_boot)[:, None] * m).ravel()
        counts = np.bincount(flat, minlength=n_boot * m).reshape(n_boot, m)
        weights[:, members] = counts
    return weights


# Stream of the control-prompt resamples, independent of the image resamples drawn from ``seed`` itself.
_CONTROL_STREAM = 1


def control_resample_weights(n_controls: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_controls) float32 draw counts of control prompts, each row summing to ``n_controls``.

    Inside image resample ``b`` the control panel is replaced by a resample of it with
    replacement (row ``b``), so an interval for a prompt's skew relative to the controls
    covers both the image noise and the choice of controls. The draws use their own random
    stream (``seed`` combined with a fixed stream number), so adding controls does not
    change the image resamples.
    """
    if n_controls < 1:
        raise ValueError(f"n_controls must be at least 1, got {n_controls}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    rng = np.random.default_rng([seed, _CONTROL_STREAM])
    draws = rng.integers(0, n_controls, size=(n_boot, n_controls))
    flat = (draws + np.arange(n_boot)[:, None] * n_controls).ravel()
    return np.bincount(flat, minlength=n_boot * n_controls).reshape(n_boot, n_controls).astype(np.float32)


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval along axis 0, ignoring NaN replicates (NaN if all are NaN)."""
    replicates = np.asarray(replicates, dtype=np.float64)
    alpha = (1.0 - level) / 2.0
    if not np.isnan(replicates).any():
        # No NaN: one vectorised quantile call gives the same numbers as nanquantile, which
        # loops over the columns in Python (a third of the audit's statistics time before).
        low, high = np.quantile(replicates, [alpha, 1.0 - alpha], axis=0)
        return low, high
    # An all-NaN column (a rate undefined in every resample) is reported as NaN on purpose.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="All-NaN slice encountered")
        low = np.nanquantile(replicates, alpha, axis=0)
        high = np.nanquantile(replicates, 1.0 - alpha, axis=0)
    return low, high


def _z_test(point: float, replicates: np.ndarray) -> tuple[float, float]:
    r = np.asarray(replicates, dtype=np.float64)
    r = r[~np.isnan(r)]
    if r.size < 2 or np.isnan(point):
        return float("nan"), float("nan")
    return float(point), float(np.std(r, ddof=1))


def two_sided_p_value(point: float, replicates: np.ndarray, null: float = 0.0) -> float:
    """Wald p-value that the statistic differs from ``null``, with the bootstrap standard error.

    A normal approximation rather than counting replicates, so p-values are not floored at
    1/(B+1) and stay usable after a Holm correction over many tests.
    """
    from scipy.special import ndtr

    est, se = _z_test(point, replicates)
    if np.isnan(est):
        return float("nan")
    if se == 0:
        return 0.0 if est != null else 1.0
    return float(2.0 * ndtr(-abs(est - null) / se))


def one_sided_p_value(point: float, replicates: np.ndarray, threshold: float, higher_is_worse: bool) -> float:
    """Wald p-value against "the true value is on the acceptable side of ``threshold``"."""
    from scipy.special import ndtr

    est, se = _z_test(point, replicates)
    if np.isnan(est):
        return float("nan")
    excess = est - threshold if higher_is_worse else threshold - est
    if se == 0:
        return 0.0 if excess > 0 else 1.0
    return float(ndtr(-excess / se))

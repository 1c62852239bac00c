"""Wilson and Newcombe intervals: hand-computed values, the paper's examples, exact coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from workbench.audit.intervals import newcombe_interval, normal_quantile, wilson_interval

Z95 = 1.959963984540054


def _textbook_wilson(x: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's formula written out once more, independently, for the hand checks."""
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_normal_quantile_matches_table_values():
    assert normal_quantile(0.95) == pytest.approx(Z95, abs=1e-12)
    assert normal_quantile(0.90) == pytest.approx(1.6448536269514722, abs=1e-12)
    assert normal_quantile(0.99) == pytest.approx(2.5758293035489004, abs=1e-12)
    with pytest.raises(ValueError, match="level must be strictly between 0 and 1"):
        normal_quantile(95)


@pytest.mark.parametrize(
    "x, n, low, high",
    [
        # 0/10: low is exactly 0, high = z^2/n / (1 + z^2/n) = 0.3841/1.3841.
        (0, 10, 0.0, 0.277533),
        (10, 10, 0.722467, 1.0),
        # 5/10: centre 0.5, half-width z/(1+z^2/n) * sqrt(0.025 + z^2/400) = 1.41601 * 0.18602 = 0.263407.
        (5, 10, 0.236593, 0.763407),
        # 56/70: centre (0.8 + 0.027439)/1.054878 = 0.784393, half 1.858000 * 0.0498167 = 0.092559.
        (56, 70, 0.691834, 0.876953),
    ],
)
def test_wilson_hand_computed(x, n, low, high):
    for corrected in (True, False):
        got_low, got_high = wilson_interval(x, n, edge_correction=corrected)
        assert float(got_low) == pytest.approx(low, abs=1e-6)
        assert float(got_high) == pytest.approx(high, abs=1e-6)
    # and the same as an independent transcription of the formula (away from the clipped edges)
    if 0 < x < n:
        ref_low, ref_high = _textbook_wilson(x, n)
        assert float(wilson_interval(x, n, edge_correction=False)[0]) == pytest.approx(ref_low, abs=1e-12)
        assert float(wilson_interval(x, n, edge_correction=False)[1]) == pytest.approx(ref_high, abs=1e-12)


def test_wilson_edge_correction_uses_the_poisson_bound_for_few_events():
    # 1/10: textbook lower bound 0.211013 - 0.193137 = 0.017876; Garwood's Poisson bound for 1 event is -ln(0.975)/n.
    plain_low, plain_high = wilson_interval(1, 10, edge_correction=False)
    low, high = wilson_interval(1, 10)
    assert float(plain_low) == pytest.approx(0.017876, abs=1e-6)
    assert float(low) == pytest.approx(-math.log(0.975) / 10, abs=1e-12)
    assert float(high) == float(plain_high)
    # 9/10 is the mirror image.
    low9, high9 = wilson_interval(9, 10)
    assert float(high9) == pytest.approx(1 + math.log(0.975) / 10, abs=1e-12)
    assert float(low9) == pytest.approx(1 - float(plain_high), abs=1e-12)
    # x* = 2 for n <= 50: 3/50 is untouched; x* = 3 for n > 50: 3/100 is modified.
    assert wilson_interval(3, 50) == wilson_interval(3, 50, edge_correction=False)
    assert float(wilson_interval(3, 100)[0]) < float(wilson_interval(3, 100, edge_correction=False)[0])


def test_wilson_correction_only_widens_and_interval_is_symmetric():
    for n in (1, 2, 7, 30, 51, 100, 250):
        x = np.arange(n + 1)
        low, high = wilson_interval(x, n)
        plain_low, plain_high = wilson_interval(x, n, edge_correction=False)
        assert np.all(low <= plain_low + 1e-15) and np.all(high >= plain_high - 1e-15)
        assert np.all(high - low > 0), n
        assert np.all((low >= 0) & (high <= 1))
        assert np.all((low <= x / n) & (x / n <= high))
        # successes and failures swap roles: [l(x), h(x)] = [1 - h(n-x), 1 - l(n-x)]
        np.testing.assert_allclose(low, 1 - high[::-1], atol=1e-12)


def test_wilson_edges_and_empty_groups():
    low, high = wilson_interval([0, 394, 0], [394, 394, 0])
    assert low[0] == 0.0 and 0 < high[0] < 0.01
    assert high[1] == 1.0 and 0.99 < low[1] < 1.0
    assert np.isnan(low[2]) and np.isnan(high[2])


def test_wilson_vectorised_equals_scalar_and_broadcasts():
    rng = np.random.default_rng(0)
    n = rng.integers(1, 500, size=200)
    x = rng.integers(0, n + 1)
    low, high = wilson_interval(x, n, level=0.9)
    for i in range(n.size):
        s_low, s_high = wilson_interval(int(x[i]), int(n[i]), level=0.9)
        assert isinstance(s_low, np.float64)
        assert low[i] == pytest.approx(s_low, abs=1e-14) and high[i] == pytest.approx(s_high, abs=1e-14)
    grid_low, _ = wilson_interval(np.arange(5)[:, None], np.array([4, 8, 16]))
    assert grid_low.shape == (5, 3)
    assert grid_low[2, 1] == pytest.approx(wilson_interval(2, 8)[0], abs=1e-14)


def test_wilson_rejects_impossible_counts():
    with pytest.raises(ValueError, match="element 1 has successes=11, n=10"):
        wilson_interval([3, 11], 10)
    with pytest.raises(ValueError, match="n must be >= 0"):
        wilson_interval(0, -1)
    with pytest.raises(ValueError, match="must not be NaN"):
        wilson_interval(float("nan"), 10)


# Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10, examples (a), (b),
# (d)-(h); (c) 6/7 - 2/7 was computed by hand from the two Wilson intervals
# (0.486875, 0.974323) and (0.082219, 0.641063).
NEWCOMBE_EXAMPLES = [
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((6, 7, 2, 7), (0.0582, 0.8062)),
    ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ((0, 10, 0, 20), (-0.1611, 0.2775)),
    ((0, 10, 0, 10), (-0.2775, 0.2775)),
    ((10, 10, 0, 20), (0.6791, 1.0000)),
    ((10, 10, 0, 10), (0.6075, 1.0000)),
]


@pytest.mark.parametrize("counts, expected", NEWCOMBE_EXAMPLES)
def test_newcombe_papers_examples(counts, expected):
    low, high = newcombe_interval(*counts)
    assert round(float(low), 4) == pytest.approx(expected[0], abs=1e-9)
    assert round(float(high), 4) == pytest.approx(expected[1], abs=1e-9)
    # swapping the samples negates and swaps the bounds
    x1, n1, x2, n2 = counts
    swapped_low, swapped_high = newcombe_interval(x2, n2, x1, n1)
    assert float(swapped_low) == pytest.approx(-float(high), abs=1e-12)
    assert float(swapped_high) == pytest.approx(-float(low), abs=1e-12)


def test_newcombe_edges_vectorised_and_empty():
    # 394/394 against 380/394: positive width, inside [-1, 1], contains the point estimate.
    low, high = newcombe_interval([394, 5, 0], [394, 10, 0], [380, 0, 3], [394, 0, 10])
    assert low[0] < 14 / 394 < high[0] and high[0] - low[0] > 0 and high[0] <= 1.0
    assert np.isnan(low[1]) and np.isnan(high[1]) and np.isnan(low[2]) and np.isnan(high[2])

    rng = np.random.default_rng(1)
    n1, n2 = rng.integers(1, 300, size=(2, 100))
    x1, x2 = rng.integers(0, n1 + 1), rng.integers(0, n2 + 1)
    low, high = newcombe_interval(x1, n1, x2, n2, level=0.99)
    for i in range(100):
        s_low, s_high = newcombe_interval(int(x1[i]), int(n1[i]), int(x2[i]), int(n2[i]), level=0.99)
        # equal up to the last bit or two: numpy's array and scalar paths may round differently
        assert low[i] == pytest.approx(s_low, abs=1e-14) and high[i] == pytest.approx(s_high, abs=1e-14)
    with pytest.raises(ValueError, match=r"newcombe_interval \(sample 2\)"):
        newcombe_interval(1, 10, 12, 10)


def _wilson_coverage(n: int, p: float, **kwargs) -> float:
    """Exact coverage: sum of binomial probabilities of the counts whose interval holds p."""
    x = np.arange(n + 1)
    low, high = wilson_interval(x, n, **kwargs)
    return float(binom.pmf(x, n, p)[(low <= p) & (p <= high)].sum())


def _newcombe_coverage(n1: int, p1: float, n2: int, p2: float) -> float:
    x1 = np.arange(n1 + 1)[:, None]
    x2 = np.arange(n2 + 1)[None, :]
    low, high = newcombe_interval(x1, n1, x2, n2)
    joint = binom.pmf(x1, n1, p1) * binom.pmf(x2, n2, p2)
    d = p1 - p2
    # a hair of tolerance: p1 - p2 in floating point vs. bounds that equal it exactly
    return float(joint[(low <= d + 1e-12) & (d - 1e-12 <= high)].sum())


@pytest.mark.parametrize("n", [30, 100, 400, 1600])
@pytest.mark.parametrize("p", [0.5, 0.9, 0.99, 0.05])
def test_wilson_exact_coverage_on_the_study_grid(n, p):
    assert _wilson_coverage(n, p) >= 0.93


def test_textbook_wilson_dips_where_the_correction_is_needed():
    # The reason for the default: without it, n = 100, p = 0.99 covers only 92.06%.
    assert _wilson_coverage(100, 0.99, edge_correction=False) == pytest.approx(0.9206, abs=1e-4)
    assert _wilson_coverage(100, 0.99) == pytest.approx(0.9816, abs=1e-4)


@pytest.mark.parametrize(
    "n1, p1, n2, p2",
    [(30, 0.5, 30, 0.5), (30, 0.9, 100, 0.85), (100, 0.99, 100, 0.94), (400, 0.99, 400, 0.99), (50, 0.2, 80, 0.1)],
)
def test_newcombe_exact_coverage(n1, p1, n2, p2):
    assert _newcombe_coverage(n1, p1, n2, p2) >= 0.93

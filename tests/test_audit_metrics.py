"""Audit metrics against values computed by hand (the arithmetic is written out in each test)."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from workbench.audit import metrics as M
from workbench.audit.bootstrap import (
    one_sided_p_value,
    percentile_interval,
    stratified_bootstrap_weights,
    two_sided_p_value,
)

LN = math.log

# Six images; by score the ranking is rows 1, 4, 2, 5, 0, 3, i.e. groups A A B A B B.
SCORES6 = np.array([0.5, 0.9, 0.7, 0.4, 0.8, 0.6])
GROUPS6 = np.array([1, 0, 1, 1, 0, 0])  # A = 0, B = 1
UNIFORM2 = np.array([0.5, 0.5])


def test_rank_order_breaks_ties_by_index():
    scores = np.array([0.5, 0.5, 0.9, 0.5, 0.1])
    assert M.rank_order(scores).tolist() == [2, 0, 1, 3, 4]


def test_rank_order_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        M.rank_order(np.array([0.1, np.nan]))


def test_skew_six_image_ranking_uniform():
    assert M.rank_order(SCORES6).tolist() == [1, 4, 2, 5, 0, 3]
    # top 3 = A A B: p_A = 2/3, p_B = 1/3, target 1/2 each.
    skew = M.skew_at_k(SCORES6, GROUPS6, 2, 3, UNIFORM2)
    assert skew[0] == pytest.approx(LN((2 / 3) / 0.5))  # ln(4/3) = 0.2877
    assert skew[1] == pytest.approx(LN((1 / 3) / 0.5))  # ln(2/3) = -0.4055
    assert M.max_min_skew(skew) == pytest.approx((0.28768207245178085, -0.4054651081081645))
    # top 2 = A A: B is absent and counted with share 1/k = 1/2 (reference convention).
    skew2 = M.skew_at_k(SCORES6, GROUPS6, 2, 2, UNIFORM2)
    assert skew2 == pytest.approx([LN(1.0 / 0.5), LN(0.5 / 0.5)])


def test_ndkl_six_image_ranking():
    # prefixes: A -> (1, 0), AA -> (1, 0), AAB -> (2/3, 1/3); KL to (1/2, 1/2), discount 1/log2(i+1).
    kl1 = 1.0 * LN(1.0 / 0.5)
    kl2 = kl1
    kl3 = (2 / 3) * LN((2 / 3) / 0.5) + (1 / 3) * LN((1 / 3) / 0.5)
    d = [1.0, 1 / math.log2(3), 1 / math.log2(4)]
    expected = (kl1 * d[0] + kl2 * d[1] + kl3 * d[2]) / sum(d)
    assert expected == pytest.approx(0.5437968, abs=1e-6)
    assert M.ndkl(SCORES6, GROUPS6, 2, 3, UNIFORM2) == pytest.approx(expected)


def _eight():
    # ranked (score descending) groups: A B A A C B A B
    scores = np.array([0.95, 0.90, 0.85, 0.80, 0.75, 0.70, 0.65, 0.60])
    groups = np.array([0, 1, 0, 0, 2, 1, 0, 1])
    perm = np.array([5, 2, 7, 0, 3, 6, 1, 4])  # shuffle rows so the order must come from the scores
    return scores[perm], groups[perm]


def test_skew_three_groups_uniform_and_data_target():
    scores, groups = _eight()
    assert M.target_distribution(groups, 3, "uniform") == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    assert M.target_distribution(groups, 3, "data") == pytest.approx([4 / 8, 3 / 8, 1 / 8])
    # top 4 = A B A A: counts 3, 1, 0 (C absent, counted as 1/4).
    uni = M.skew_at_k(scores, groups, 3, 4, M.target_distribution(groups, 3, "uniform"))
    assert uni == pytest.approx([LN(0.75 * 3), LN(0.25 * 3), LN(0.25 * 3)])
    data = M.skew_at_k(scores, groups, 3, 4, M.target_distribution(groups, 3, "data"))
    assert data == pytest.approx([LN(0.75 / 0.5), LN(0.25 / 0.375), LN(0.25 / 0.125)])


def test_ndkl_three_groups():
    scores, groups = _eight()
    t = 1 / 3
    kls = [
        LN(1 / t),  # A
        2 * 0.5 * LN(0.5 / t),  # A B
        (2 / 3) * LN((2 / 3) / t) + (1 / 3) * LN((1 / 3) / t),  # A B A
        0.75 * LN(0.75 / t) + 0.25 * LN(0.25 / t),  # A B A A
    ]
    d = [1 / math.log2(i + 1) for i in range(1, 5)]
    expected = sum(a * b for a, b in zip(kls, d)) / sum(d)
    assert expected == pytest.approx(0.709103, abs=1e-5)
    assert M.ndkl(scores, groups, 3, 4, np.full(3, t)) == pytest.approx(expected)


def test_ties_at_cutoff_count_exactly_k():
    scores = np.array([0.5, 0.5, 0.5, 0.1])
    groups = np.array([0, 1, 1, 0])
    # top 2 by (score, index) = rows 0 and 1 -> one of each; the reference code would keep 3 rows.
    assert M.top_k_counts(scores, groups, 2, 2).tolist() == [1, 1]
    assert M.skew_at_k(scores, groups, 2, 2, UNIFORM2) == pytest.approx([0.0, 0.0])


def test_k_larger_than_data_is_an_error():
    with pytest.raises(ValueError, match="k=7 is larger than the number of images"):
        M.skew_at_k(SCORES6, GROUPS6, 2, 7, UNIFORM2)


def test_weighted_ranking_equals_expanded_data():
    rng = np.random.default_rng(3)
    n = 40
    scores = np.round(rng.uniform(size=n), 1)  # coarse scores -> many ties
    groups = rng.integers(0, 3, n)
    weights = rng.integers(0, 4, size=(5, n)).astype(np.float32)
    weights[:, 0] += 30  # enough images in every resample
    ks = [5, 12]
    targets = [np.array([0.2, 0.3, 0.5]), np.full(3, 1 / 3)]
    skew, nd = M.ranking_metrics_weighted(M.rank_order(scores), groups, 3, ks, targets, weights)
    for b in range(weights.shape[0]):
        rep = weights[b].astype(int)
        s_b, g_b = np.repeat(scores, rep), np.repeat(groups, rep)
        for ki, k in enumerate(ks):
            for ti, t in enumerate(targets):
                assert skew[b, ki, ti] == pytest.approx(M.skew_at_k(s_b, g_b, 3, k, t))
                assert nd[b, ki, ti] == pytest.approx(M.ndkl(s_b, g_b, 3, k, t))


@pytest.mark.parametrize("zero_head", [0, 150])
def test_ranking_prefix_scan_is_bit_identical_to_the_full_scan(zero_head):
    # zero_head rows at the top are absent from every resample, so the prefix must grow past 4 k.
    rng = np.random.default_rng(11)
    n, ks = 2000, [10, 25]
    scores = np.round(rng.uniform(size=n), 2)
    groups = rng.integers(0, 3, n)
    weights = rng.poisson(1.0, size=(30, n)).astype(np.float32)
    order = M.rank_order(scores)
    weights[:, order[:zero_head]] = 0
    targets = [np.full(3, 1 / 3), np.array([0.5, 0.3, 0.2])]
    fast = M.ranking_metrics_weighted(order, groups, 3, ks, targets, weights)
    full = M.ranking_metrics_weighted(order, groups, 3, ks, targets, weights, full_scan=True)
    for a, b in zip(fast, full):
        assert np.array_equal(a, b, equal_nan=True)
    # Skew only (the control prompts): the same skew, bit for bit, and no NDKL.
    skew_only, no_ndkl = M.ranking_metrics_weighted(order, groups, 3, ks, targets, weights, with_ndkl=False)
    assert np.array_equal(skew_only, fast[0], equal_nan=True) and np.isnan(no_ndkl).all()


def test_ranking_views_share_one_scan_and_equal_each_view_alone():
    rng = np.random.default_rng(12)
    n, ks = 900, [10, 40]
    scores = np.round(rng.uniform(size=n), 2)  # ties
    order = M.rank_order(scores)
    weights = rng.poisson(1.0, size=(25, n)).astype(np.float32)
    views = [(rng.integers(0, 3, n), 3, [np.full(3, 1 / 3), np.array([0.5, 0.3, 0.2])]),
             (rng.integers(0, 2, n), 2, [np.full(2, 0.5)]),
             (rng.integers(0, 6, n), 6, [np.full(6, 1 / 6)])]
    for with_ndkl in (True, False):
        together = M.ranking_metrics_views(order, views, ks, weights, with_ndkl=with_ndkl)
        for (codes, a, targets), (skew, nd) in zip(views, together):
            alone = M.ranking_metrics_weighted(order, codes, a, ks, targets, weights, full_scan=True)
            assert np.array_equal(skew, alone[0], equal_nan=True)  # both scans give the same skew, bit for bit
            if with_ndkl:
                assert np.array_equal(nd, alone[1], equal_nan=True)
            else:
                assert np.isnan(nd).all()


def test_skew_only_scan_equals_expanded_data():
    # The skew-only path counts min(w_i, k - images above) per row instead of locating positions.
    rng = np.random.default_rng(5)
    n = 60
    scores = np.round(rng.uniform(size=n), 1)
    groups = rng.integers(0, 3, n)
    weights = rng.integers(0, 4, size=(6, n)).astype(np.float32)
    weights[:, 0] += 20
    target = np.array([0.2, 0.3, 0.5])
    skew, _ = M.ranking_metrics_weighted(M.rank_order(scores), groups, 3, [7, 19], [target], weights, with_ndkl=False)
    for b in range(weights.shape[0]):
        rep = weights[b].astype(int)
        s_b, g_b = np.repeat(scores, rep), np.repeat(groups, rep)
        for ki, k in enumerate([7, 19]):
            assert skew[b, ki, 0] == pytest.approx(M.skew_at_k(s_b, g_b, 3, k, target))


def test_weighted_ranking_ones_is_point_estimate():
    skew, nd = M.ranking_metrics_weighted(M.rank_order(SCORES6), GROUPS6, 2, [3], [UNIFORM2], np.ones((1, 6)))
    assert skew[0, 0, 0] == pytest.approx([LN(4 / 3), LN(2 / 3)])
    assert nd[0, 0, 0] == pytest.approx(0.5437968, abs=1e-6)


# ---------------------------------------------------------------------------------------
# classification

Y_TRUE = np.array([0, 0, 1, 1, 2, 2, 0, 1])
Y_PRED = np.array([0, 1, 1, 1, 2, 0, 0, 2])
G8 = np.array([0, 0, 0, 0, 1, 1, 1, 1])


def test_accuracy_by_group():
    assert M.accuracy(Y_TRUE, Y_PRED) == pytest.approx(5 / 8)
    hits = (Y_TRUE == Y_PRED).astype(float)
    rates = M.group_rates_weighted(hits, np.eye(2)[G8], np.ones((1, 8)))[0]
    assert rates == pytest.approx([3 / 4, 2 / 4])


def test_accuracy_matches_fairlearn_metricframe():
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import accuracy_score

    mf = MetricFrame(metrics=accuracy_score, y_true=Y_TRUE, y_pred=Y_PRED, sensitive_features=G8)
    hits = (Y_TRUE == Y_PRED).astype(float)
    rates = M.group_rates_weighted(hits, np.eye(2)[G8], np.ones((1, 8)))[0]
    assert mf.by_group.to_numpy() == pytest.approx(rates)
    assert mf.difference() == pytest.approx(0.25)


def test_demographic_parity_and_equalized_odds():
    yp = np.array([1, 1, 0, 0, 1, 0, 0, 0])
    yt = np.array([1, 0, 1, 0, 1, 1, 0, 0])
    # selection: A 2/4, B 1/4 -> DP 0.25.
    assert M.selection_rates(yp, G8, 2) == pytest.approx([0.5, 0.25])
    assert M.demographic_parity_difference(yp, G8, 2) == pytest.approx(0.25)
    # TPR: A rows 0,2 -> 1/2, B rows 4,5 -> 1/2; FPR: A rows 1,3 -> 1/2, B rows 6,7 -> 0. EO = 0.5.
    assert M.equalized_odds_difference(yt, yp, G8, 2) == pytest.approx(0.5)
    dp, eo = M.dp_eo_weighted(yt, yp, G8, 2, np.ones((1, 8)))
    assert dp[0] == pytest.approx(0.25) and eo[0] == pytest.approx(0.5)

    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    assert demographic_parity_difference(yt, yp, sensitive_features=G8) == pytest.approx(0.25)
    assert equalized_odds_difference(yt, yp, sensitive_features=G8) == pytest.approx(0.5)


def test_equalized_odds_undefined_without_positives():
    yt = np.array([1, 0, 0, 0])
    yp = np.array([1, 0, 1, 0])
    g = np.array([0, 0, 1, 1])  # group 1 has no positives -> TPR undefined
    assert math.isnan(M.equalized_odds_difference(yt, yp, g, 2))


# ---------------------------------------------------------------------------------------
# prompt-group association


def test_group_prompt_preference():
    sim = np.array([[0.9, 0.1], [0.3, 0.2], [0.1, 0.5], [0.6, 0.6]])
    g = np.array([0, 0, 1, 1])
    # argmax: 0, 0, 1, 0 (tie -> first column): group 0 2/2 own, group 1 1/2 own.
    assert M.group_prompt_preference(sim, g, 2) == pytest.approx([1.0, 0.5])


def test_weat_effect_size_and_exact_permutation_p():
    s = np.array([0.3, 0.1, -0.1, -0.3])
    x = np.array([True, True, False, False])
    # mean X 0.2, mean Y -0.2; sample std of s = sqrt(0.2 / 3).
    assert M.weat_effect_size(s, x, ~x) == pytest.approx(0.4 / math.sqrt(0.2 / 3))
    # The 6 equal-size splits give |mean diff| 0.4, 0.2, 0, 0, 0.2, 0.4: two reach 0.4 -> p = 2/6.
    assert M.weat_permutation_p_value(s, x, ~x) == pytest.approx(2 / 6)


def test_weat_monte_carlo_p_is_small_for_separated_groups():
    s = np.concatenate([np.linspace(1, 2, 30), np.linspace(-2, -1, 30)])
    x = np.arange(60) < 30
    p = M.weat_permutation_p_value(s, x, ~x, n_perm=999, seed=1)
    assert p == pytest.approx(1 / 1000)  # no random split is as extreme: (1 + 0) / (1 + 999)


def test_weat_monte_carlo_p_converges_to_the_exact_p():
    # n = 14, 7 per group: 3432 assignments. With n_perm below that the random-subset path runs;
    # its p must sit within binomial noise of the enumerated (exact) p, for several statistics.
    rng = np.random.default_rng(5)
    x = np.arange(14) < 7
    for shift in (0.0, 0.6, 1.2):
        s = rng.normal(size=14) + shift * x
        exact = M.weat_permutation_p_value(s, x, ~x, n_perm=5000)  # 3432 <= 5000: enumerated
        mc = M.weat_permutation_p_value(s, x, ~x, n_perm=3000, seed=9)
        sd = math.sqrt(exact * (1 - exact) / 3000) + 1 / 3001
        assert abs(mc - exact) < 4 * sd, (shift, mc, exact)


def test_weat_random_subsets_are_uniform():
    rng = np.random.default_rng(0)
    rows = M._random_subsets(rng, 6000, 5, 2)  # 10 subsets of 2 out of 5, 600 expected each
    assert np.all(rows.sum(axis=1) == 2)
    codes = rows @ (2.0 ** np.arange(5))
    counts = np.unique(codes, return_counts=True)[1]
    assert counts.size == 10
    chi2 = float(((counts - 600.0) ** 2 / 600.0).sum())
    assert chi2 < 27.9  # 9 df, p = 0.001


def test_weat_monte_carlo_p_equals_one_block_of_all_subsets():
    # n = 6000 makes the function work in blocks of 699 subsets; the keys come row after row from
    # one stream, so one block of all 1000 must give the same p.
    rng = np.random.default_rng(5)
    n, n_perm, nx = 6000, 1000, 2500
    s = rng.normal(size=n) + 0.03 * (np.arange(n) < nx)
    x = np.arange(n) < nx
    pooled = np.concatenate([s[x], s[~x]])
    keys = np.random.default_rng(7).random((n_perm, n))
    chosen = keys <= np.partition(keys, nx - 1, axis=1)[:, nx - 1 : nx]
    assert np.all(chosen.sum(axis=1) == nx)
    sums = chosen @ pooled
    stats = np.abs(sums / nx - (pooled.sum() - sums) / (n - nx))
    observed = abs(pooled[:nx].mean() - pooled[nx:].mean())
    expected = (1 + int(np.sum(stats >= observed - 1e-12 * max(1.0, observed)))) / (1 + n_perm)
    p = M.weat_permutation_p_value(s, x, ~x, n_perm=n_perm, seed=7)
    assert 0.01 < p < 0.99 and p == expected


# ---------------------------------------------------------------------------------------
# harmful labels, multiple testing


def test_harmful_rates():
    predicted = np.array([0, 4, 1, 5, 4, 2])
    harmful = np.array([False, False, False, False, True, True])
    g = np.array([0, 0, 0, 1, 1, 1])
    assert M.harmful_rates(predicted, harmful, g, 2) == pytest.approx([1 / 3, 2 / 3])


def test_holm_adjust():
    # sorted 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.06.
    assert M.holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = M.holm_adjust([0.5, float("nan")])
    assert out[0] == pytest.approx(0.5) and math.isnan(out[1])


# ---------------------------------------------------------------------------------------
# bootstrap


def test_stratified_weights_keep_every_stratum_size():
    strata = np.array([0] * 50 + [1] * 3 + [2] * 1)
    w = stratified_bootstrap_weights(strata, 200, seed=0)
    assert w.shape == (200, 54)
    for s, size in [(0, 50), (1, 3), (2, 1)]:
        assert np.all(w[:, strata == s].sum(axis=1) == size)
    assert np.all(w[:, 53] == 1)  # a single-image stratum is drawn once every time
    assert np.array_equal(w, stratified_bootstrap_weights(strata, 200, seed=0))
    assert w.mean() == pytest.approx(1.0)


def test_percentile_interval():
    reps = np.arange(1, 101, dtype=float)  # 1..100
    low, high = percentile_interval(reps[:, None], level=0.9)
    assert low[0] == pytest.approx(5.95) and high[0] == pytest.approx(95.05)  # numpy's linear rule


def test_percentile_interval_fast_path_equals_nanquantile_and_nan_columns_are_skipped():
    rng = np.random.default_rng(4)
    reps = rng.normal(size=(999, 7))
    alpha = (1.0 - 0.95) / 2.0  # as the function computes it (not the literal 0.025)
    low, high = percentile_interval(reps, level=0.95)  # no NaN: the vectorised path
    assert np.array_equal(low, np.nanquantile(reps, alpha, axis=0))
    assert np.array_equal(high, np.nanquantile(reps, 1.0 - alpha, axis=0))
    reps[:500, 2] = np.nan  # column 2 keeps 499 replicates, column 3 none
    reps[:, 3] = np.nan
    low, high = percentile_interval(reps, level=0.95)
    assert low[2] == np.quantile(reps[500:, 2], alpha) and np.isnan(low[3]) and np.isnan(high[3])
    assert low[0] == np.quantile(reps[:, 0], alpha)


def test_wald_p_values_use_bootstrap_standard_error():
    reps = np.arange(1, 101, dtype=float)
    se = math.sqrt(100 * 101 / 12)  # sample std of 1..100
    # two-sided, estimate 50.5 against 0: 2 * Phi(-50.5 / se)
    assert two_sided_p_value(50.5, reps, 0.0) == pytest.approx(2 * NormalDist().cdf(-50.5 / se))
    # one-sided, estimate 95 beyond threshold 90 (higher is worse): Phi(-(95 - 90) / se)
    assert one_sided_p_value(95.0, reps, 90.0, higher_is_worse=True) == pytest.approx(NormalDist().cdf(-5 / se))
    # lower is worse, estimate 95 above threshold 90 (acceptable side): Phi((95 - 90) / se) > 0.5
    assert one_sided_p_value(95.0, reps, 90.0, higher_is_worse=False) == pytest.approx(NormalDist().cdf(5 / se))

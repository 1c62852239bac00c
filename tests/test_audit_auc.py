"""Medical fairness metrics: weighted AUC (ties, sample weights, sklearn equality), ES-AUC by hand,
and the audit family's rows on planted embeddings whose per-group AUCs are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from workbench import schema
from workbench.audit.core import ModelEmbeddings, compute_audit
from workbench.audit.families import DEFAULT_DIRECTION, FAMILIES
from workbench.audit.families.auc import equity_scaled_auc, weighted_auc, zero_shot_scores
from workbench.audit.spec import parse_audit_spec


def test_auc_by_hand_with_ties_and_weights():
    scores = np.array([0.9, 0.4, 0.6, 0.1])
    positive = np.array([True, True, False, False])
    # Pairs (positive, negative): 0.9>0.6, 0.9>0.1, 0.4<0.6, 0.4>0.1: 3 of 4.
    assert weighted_auc(scores, positive, np.ones((1, 4))).tolist() == [0.75]
    # Weights 2, 1, 1, 0: positives weigh 3, negatives 1 (only 0.6 counts): (2*1*1 + 1*1*0) / 3.
    assert weighted_auc(scores, positive, np.array([[2, 1, 1, 0]]))[0] == pytest.approx(2 / 3)
    # A tie between a positive and a negative counts one half: (0.5 + 1) / 2.
    assert weighted_auc(np.array([0.5, 0.5, 0.2]), np.array([True, False, False]), np.ones((1, 3)))[0] == 0.75
    # No negative drawn in a resample: undefined, not 0 or 1.
    assert np.isnan(weighted_auc(scores, positive, np.array([[1, 1, 0, 0]]))[0])


@pytest.mark.parametrize("tied", [True, False], ids=["ties", "no-ties"])
def test_weighted_auc_equals_sklearn_with_sample_weights(tied):
    rng = np.random.default_rng(0)
    # many ties (the tie-block path), or continuous scores (the no-tie path)
    scores = rng.integers(0, 12, size=200) / 12.0 if tied else rng.normal(size=200)
    assert (np.unique(scores).size < 200) == tied
    positive = rng.random(200) < 0.3
    weights = rng.multinomial(200, np.full(200, 1 / 200), size=25).astype(float)
    ours = weighted_auc(scores, positive, weights)
    for b in range(25):
        assert ours[b] == pytest.approx(roc_auc_score(positive, scores, sample_weight=weights[b]), abs=1e-12)


def test_docstring_examples():
    import doctest

    import workbench.audit.families.auc as module

    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted >= 2


def test_equity_scaled_auc_by_hand():
    assert equity_scaled_auc(np.array([0.8]), np.array([[0.9, 0.7]]))[0] == pytest.approx(0.8 / 1.2)
    assert equity_scaled_auc(np.array([0.8]), np.array([[0.8, 0.8, 0.8]]))[0] == pytest.approx(0.8)
    assert np.isnan(equity_scaled_auc(np.array([0.8]), np.array([[0.9, np.nan]]))[0])


def test_scores_are_the_log_softmax_of_100_times_cosine():
    image = np.array([[1.0, 0.0], [0.6, 0.8], [0.9, np.sqrt(1 - 0.81)]])
    classes = np.array([[1.0, 0.0], [0.0, 1.0]])
    log_p = zero_shot_scores(image, classes)
    assert np.exp(log_p[1, 1]) == pytest.approx(1 / (1 + np.exp(-100 * 0.2)))
    assert np.allclose(np.exp(log_p).sum(axis=1), 1.0)
    # Both first images are certain cats (the probability rounds to 1.0 in float64) yet stay ranked.
    assert np.exp(log_p[0, 0]) == np.exp(log_p[2, 0]) == 1.0 and log_p[0, 0] > log_p[2, 0]


# Angles (degrees) of planted image embeddings in the (cat, dog) plane: a smaller angle scores more cat.
GROUP_A = {"cat": [5, 15, 25, 35], "dog": [55, 65, 75, 85]}  # perfectly separated: AUC 1
GROUP_B = {"cat": [10, 30, 50, 70], "dog": [20, 40, 60, 80]}  # interleaved: 10 of 16 pairs, AUC 0.625
# Overall, the 8 cats (5..70) beat 8+8+8+7+7+7+6+3 = 54 of 64 dogs: AUC 54/64;
# ES-AUC = (54/64) / (1 + 10/64 + 14/64) = 54/88.
SPEC = {
    "name": "auc-fixture",
    "attributes": [{"column": "g", "groups": ["A", "B"], "reference": "A"}],
    "min_group_size": 2,
    "classes": {"labels": ["cat", "dog"], "templates": ["{}"]},
    "bootstrap": {"n_boot": 300, "seed": 2},
}


def _planted(groups: dict[str, dict[str, list[int]]]):
    rows = [(g, label, angle) for g, by_label in groups.items() for label, angles in by_label.items() for angle in angles]
    table = pd.DataFrame({"row": np.arange(len(rows)), "g": [r[0] for r in rows], "label": [r[1] for r in rows]})
    theta = np.radians([r[2] for r in rows])
    image = np.stack([np.cos(theta), np.sin(theta)], axis=1).astype(np.float32)
    text = {"cat": np.array([1.0, 0.0]), "dog": np.array([0.0, 1.0])}
    return table, image, text


def _row(results, metric, **where):
    rows = results[results["metric"] == metric]
    for key, val in where.items():
        rows = rows[rows[key] == val]
    assert len(rows) == 1, f"{metric} {where}: {len(rows)} rows"
    return rows.iloc[0]


def test_family_rows_on_planted_embeddings():
    assert "auc" in {f.name for f in FAMILIES}
    assert DEFAULT_DIRECTION["auc"] == DEFAULT_DIRECTION["es_auc"] == "lower_is_worse"
    table, image, text = _planted({"A": GROUP_A, "B": GROUP_B})
    base = ModelEmbeddings(image, text, "m", "fp")
    # A "tuned" model that separates group B too: every AUC 1, ES-AUC 1.
    tuned_table, tuned_image, _ = _planted({"A": GROUP_A, "B": {"cat": [10, 20, 30, 40], "dog": [50, 60, 70, 80]}})
    assert (tuned_table["label"] == table["label"]).all()
    tuned = ModelEmbeddings(tuned_image, text, "m2", "fp2")
    result = compute_audit(parse_audit_spec(SPEC, "auc.yaml"), table, {"base": base, "tuned": tuned})
    r = result.results
    for label in ("cat", "dog"):  # two classes: one-vs-rest AUC is the same for either
        assert _row(r, "auc", model="base", group=schema.OVERALL, label=label)["value"] == pytest.approx(54 / 64)
        assert _row(r, "auc", model="base", attribute="g", group="A", label=label)["value"] == pytest.approx(1.0)
        assert _row(r, "auc", model="base", attribute="g", group="B", label=label)["value"] == pytest.approx(0.625)
        es = _row(r, "es_auc", model="base", attribute="g", label=label)
        assert es["value"] == pytest.approx(54 / 88) and es["group"] == "" and es["n"] == 16
        assert es["ci_low"] <= es["value"] <= es["ci_high"] and es["ci_low"] < es["ci_high"]
        assert _row(r, "es_auc", model="tuned", attribute="g", label=label)["value"] == pytest.approx(1.0)
    b_row = _row(r, "auc", model="base", attribute="g", group="B", label="cat")
    assert b_row["n"] == 8 and b_row["ci_low"] < 0.625 < b_row["ci_high"]
    # Paired tuned-minus-base difference on the same resamples, like every other metric.
    delta = _row(r, "es_auc", model="delta", attribute="g", label="cat")
    assert delta["value"] == pytest.approx(1 - 54 / 88) and delta["ci_low"] <= delta["value"] <= delta["ci_high"]


def test_undefined_group_auc_is_reported_not_computed():
    table, image, text = _planted({"A": GROUP_A, "B": {"cat": [10, 30, 50, 70]}})
    result = compute_audit(parse_audit_spec(SPEC, "auc.yaml"), table, {"model": ModelEmbeddings(image, text, "m", "f")})
    r = result.results
    row = _row(r, "auc", attribute="g", group="B", label="cat")
    assert row["status"] == "not_computed" and "only images of class 'cat'" in row["note"]
    es = _row(r, "es_auc", attribute="g", label="cat")
    assert es["status"] == "not_computed" and "['B']" in es["note"]
    assert _row(r, "auc", attribute="g", group="A", label="cat")["value"] == pytest.approx(1.0)

"""compute_audit on a 12-image fixture whose every number is worked out by hand below."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from workbench import schema
from workbench.audit.core import ModelEmbeddings, compute_audit
from workbench.audit.spec import parse_audit_spec

LN = math.log

# Embedding dimensions: 0 = "cat", 1 = "dog", 2 = the neutral prompt, 3 = the harmful label "rock".
# Rows 0-5 are group A, rows 6-11 group B. ``c`` decides the zero-shot prediction:
# [1, 0] -> cat, [0, 1] -> dog, [0.5, 0] with rock = 1 -> cat among {cat, dog} but rock in the probe.
ROWS = [
    # group, label, c0, c1, s, rock
    ("A", "cat", 1.0, 0.0, 0.90, 0.0),  # right
    ("A", "cat", 1.0, 0.0, 0.80, 0.0),  # right
    ("A", "dog", 0.0, 1.0, 0.60, 0.0),  # right
    ("A", "dog", 0.0, 1.0, 0.50, 0.0),  # right
    ("A", "dog", 1.0, 0.0, 0.40, 0.0),  # wrong (cat)
    ("A", "cat", 1.0, 0.0, 0.30, 0.0),  # right          -> A: 5/6
    ("B", "cat", 0.0, 1.0, 0.70, 0.0),  # wrong (dog)
    ("B", "cat", 0.5, 0.0, 0.45, 1.0),  # right; rock in the probe
    ("B", "dog", 0.0, 1.0, 0.35, 0.0),  # right
    ("B", "dog", 1.0, 0.0, 0.25, 0.0),  # wrong (cat)
    ("B", "cat", 1.0, 0.0, 0.20, 0.0),  # right
    ("B", "dog", 0.5, 0.0, 0.10, 1.0),  # wrong (cat); rock in the probe -> B: 3/6
]
# Scores for "up" are s / |row| (rows 7 and 11 have a larger norm): the top 4 are rows
# 0 (.669), 1 (.625), 6 (.573), 2 (.514) -> groups A A B A. For "down" (-s) the top 4
# are rows 11, 10, 9, 5 -> B B B A.

SPEC = {
    "name": "fixture",
    "attributes": [{"column": "g", "groups": ["A", "B"], "reference": "A"}],
    "min_group_size": 7,
    "classes": {"labels": ["cat", "dog"], "templates": ["{}"]},
    "skew": {"prompts": ["up", "down"], "k": [4], "targets": ["uniform"]},
    "harmful": {"labels": ["rock"], "templates": ["{}"]},
    "policy": {
        "checks": [
            {"name": "gap", "metric": "accuracy_gap", "attribute": "g", "warn": 0.05, "fail": 0.1},
            {"name": "skew", "metric": "max_skew_mean", "attribute": "g", "warn": 1.0, "fail": 2.0},
        ]
    },
    "bootstrap": {"n_boot": 200, "seed": 1},
}


def fixture_inputs():
    table = pd.DataFrame({"row": np.arange(12), "label": [r[1] for r in ROWS], "g": [r[0] for r in ROWS]})
    img = np.array([[r[2], r[3], r[4], r[5]] for r in ROWS])
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    text = {
        "cat": np.array([1.0, 0, 0, 0]),
        "dog": np.array([0, 1.0, 0, 0]),
        "up": np.array([0, 0, 1.0, 0]),
        "down": np.array([0, 0, -1.0, 0]),
        "rock": np.array([0, 0, 0, 1.0]),
    }
    return table, ModelEmbeddings(img.astype(np.float32), text, "fixture-model", "fp")


def value(results, metric, **where):
    rows = results[results["metric"] == metric]
    for key, val in where.items():
        rows = rows[rows[key] == val]
    assert len(rows) == 1, f"{metric} {where}: {len(rows)} rows"
    return rows.iloc[0]


@pytest.fixture(scope="module")
def result():
    table, emb = fixture_inputs()
    return compute_audit(parse_audit_spec(SPEC, "fixture.yaml"), table, {"model": emb})


def test_results_follow_the_schema(result):
    assert tuple(result.results.columns) == schema.RESULT_COLUMNS
    assert set(result.results["metric"]) <= set(schema.METRICS)
    assert set(result.results["status"]) <= {"ok", "small_group", "not_computed"}
    assert list(result.rankings.columns) == ["model", "prompt", "rank", "row", "score", "g"]
    for key in ("schema_version", "audit", "models", "data", "spec", "bootstrap", "checks", "verdict",
                "not_computed", "warnings", "n_tests"):
        assert key in result.summary


def test_accuracy_by_hand(result):
    r = result.results
    assert value(r, "accuracy", group=schema.OVERALL).value == pytest.approx(8 / 12)
    a = value(r, "accuracy", attribute="g", group="A")
    b = value(r, "accuracy", attribute="g", group="B")
    assert (a.value, b.value) == pytest.approx((5 / 6, 3 / 6))
    assert (a.n, b.n) == (6, 6)
    assert a.status == "small_group" and "min_group_size=7" in a.note  # 6 < 7
    assert value(r, "accuracy_difference", group="B").value == pytest.approx(3 / 6 - 5 / 6)
    assert value(r, "accuracy_ratio", group="B").value == pytest.approx((3 / 6) / (5 / 6))
    assert value(r, "accuracy_gap", attribute="g").value == pytest.approx(1 / 3)
    assert value(r, "accuracy_min_ratio", attribute="g").value == pytest.approx(0.6)
    # per class overall: cat rows 0,1,5,6,7,10 -> 5 right; dog rows 2,3,4,8,9,11 -> 3 right.
    assert value(r, "class_accuracy", group=schema.OVERALL, label="cat").value == pytest.approx(5 / 6)
    assert value(r, "class_accuracy", group=schema.OVERALL, label="dog").value == pytest.approx(3 / 6)
    # cat within B: rows 6, 7, 10 -> 7 and 10 right.
    assert value(r, "class_accuracy", attribute="g", group="B", label="cat").value == pytest.approx(2 / 3)


def test_parity_views_by_hand(result):
    r = result.results
    # one-vs-rest "cat": predicted cat A rows 0,1,4,5 (4/6), B rows 7,9,10,11 (4/6) -> DP 0.
    assert value(r, "demographic_parity_difference", label="cat").value == pytest.approx(0.0)
    # TPR A 3/3, B 2/3 (gap 1/3); FPR A 1/3 (row 4), B 2/3 (rows 9, 11) (gap 1/3) -> EO 1/3.
    assert value(r, "equalized_odds_difference", label="cat").value == pytest.approx(1 / 3)


def test_skew_by_hand(result):
    r = result.results
    where = dict(attribute="g", k=4, target="uniform")
    # "up": top 4 = A A B A.
    assert value(r, "skew", prompt="up", group="A", **where).value == pytest.approx(LN(0.75 / 0.5))
    assert value(r, "skew", prompt="up", group="B", **where).value == pytest.approx(LN(0.25 / 0.5))
    assert value(r, "max_skew", prompt="up", **where).value == pytest.approx(LN(1.5))
    assert value(r, "min_skew", prompt="up", **where).value == pytest.approx(LN(0.5))
    kl = [LN(2), LN(2), (2 / 3) * LN(4 / 3) + (1 / 3) * LN(2 / 3), 0.75 * LN(1.5) + 0.25 * LN(0.5)]
    d = [1 / math.log2(i + 1) for i in range(1, 5)]
    ndkl_up = sum(x * y for x, y in zip(kl, d)) / sum(d)
    assert value(r, "ndkl", prompt="up", **where).value == pytest.approx(ndkl_up)
    # "down": top 4 = rows 11, 10, 9, 5 = B B B A.
    assert value(r, "skew", prompt="down", group="B", **where).value == pytest.approx(LN(1.5))
    kl_down = [LN(2), LN(2), LN(2), 0.75 * LN(1.5) + 0.25 * LN(0.5)]
    ndkl_down = sum(x * y for x, y in zip(kl_down, d)) / sum(d)
    # aggregates over the two prompts: both MaxSkew = ln 1.5 -> mean ln 1.5, spread 0.
    assert value(r, "max_skew_mean", prompt=schema.ALL_PROMPTS, **where).value == pytest.approx(LN(1.5))
    assert value(r, "max_skew_std", prompt=schema.ALL_PROMPTS, **where).value == pytest.approx(0.0, abs=1e-12)
    assert value(r, "ndkl_mean", prompt=schema.ALL_PROMPTS, **where).value == pytest.approx((ndkl_up + ndkl_down) / 2)
    top = result.rankings[result.rankings["prompt"] == "up"]
    assert top["row"].tolist() == [0, 1, 6, 2] and top["g"].tolist() == ["A", "A", "B", "A"]


def test_harmful_rate_by_hand(result):
    r = result.results
    # label set {cat, dog, rock}: rows 7 and 11 (both B) go to rock.
    assert value(r, "harmful_rate", group=schema.OVERALL, label="").value == pytest.approx(2 / 12)
    assert value(r, "harmful_rate", attribute="g", group="A", label="").value == pytest.approx(0.0)
    assert value(r, "harmful_rate", attribute="g", group="B", label="").value == pytest.approx(2 / 6)
    assert value(r, "harmful_rate", attribute="g", group="B", label="rock").value == pytest.approx(2 / 6)


def test_intervals_bracket_rates_and_groups_never_vanish(result):
    r = result.results
    acc = r[(r.metric == "accuracy") & (r.attribute == "g")]
    assert (acc.ci_low <= acc.value + 1e-12).all() and (acc.value <= acc.ci_high + 1e-12).all()
    assert acc.ci_low.notna().all()  # stratified: every resample has 6 A and 6 B images
    # The recorded replicates are the resampled statistic; with fixed group sizes a rate is k/6.
    reps = result.replicates[("model", "accuracy", "g", "A", "", "", 0, "")]
    assert reps.shape == (200,)
    assert np.allclose(reps * 6, np.round(reps * 6), atol=1e-5)


def test_policy_verdicts(result):
    checks = {c["name"]: c for c in result.summary["checks"]}
    # gap 1/3 is beyond fail 0.1; with six images per group the evidence is weak -> warn or fail,
    # never pass; the checker must report the Holm-adjusted p it used.
    assert checks["gap"]["verdict"] in ("warn", "fail") and checks["gap"]["p_holm"] is not None
    # MaxSkew mean ln 1.5 = 0.405 is within warn 1.0, but groups are below min size -> not a pass.
    assert checks["skew"]["verdict"] in ("inconclusive", "pass")
    assert result.summary["verdict"] in ("warn", "fail")
    assert result.summary["n_tests"] == result.summary["multiple_testing"]["families"]["policy_checks"] == 2


def test_identical_models_have_zero_delta():
    table, emb = fixture_inputs()
    res = compute_audit(parse_audit_spec(SPEC, "fixture.yaml"), table, {"base": emb, "tuned": emb})
    delta = res.results[(res.results.model == "delta") & (res.results.status != "not_computed")]
    assert len(delta) > 0
    assert np.allclose(delta["value"], 0) and np.allclose(delta["ci_low"], 0) and np.allclose(delta["ci_high"], 0)
    assert res.summary["delta_significant"] == []


def test_delta_of_a_changed_model():
    table, emb = fixture_inputs()
    img = emb.image.copy()
    img[6] = np.array([1.0, 0, 0.7, 0]) / np.linalg.norm([1.0, 0, 0.7, 0])  # row 6 now right (cat)
    tuned = ModelEmbeddings(img, emb.text, "tuned", "fp2")
    res = compute_audit(parse_audit_spec(SPEC, "fixture.yaml"), table, {"base": emb, "tuned": tuned})
    d = value(res.results, "accuracy", model="delta", attribute="g", group="B")
    assert d.value == pytest.approx(4 / 6 - 3 / 6)
    assert value(res.results, "accuracy", model="delta", attribute="g", group="A").value == pytest.approx(0.0)
    # paired: A's rows did not change, so every resample's delta for A is exactly 0.
    assert value(res.results, "accuracy", model="delta", attribute="g", group="A").ci_high == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------
# bad input: each is reported and the rest is still computed


def _spec(**changes):
    spec = {**SPEC, **changes}
    return parse_audit_spec(spec, "bad.yaml")


def test_missing_group_column_is_reported_not_fatal():
    table, emb = fixture_inputs()
    spec = _spec(attributes=[{"column": "g"}, {"column": "site"}])
    res = compute_audit(spec, table, {"model": emb})
    assert any("'site' is not in the data" in w for w in res.summary["warnings"])
    assert any("site" in e["metric"] for e in res.summary["not_computed"])
    assert value(res.results, "accuracy", attribute="g", group="A").value == pytest.approx(5 / 6)


def test_group_without_images_is_reported():
    table, emb = fixture_inputs()
    spec = _spec(attributes=[{"column": "g", "groups": ["A", "B", "C"], "reference": "A"}])
    res = compute_audit(spec, table, {"model": emb})
    assert any("group 'C' of 'g' has no images" in w for w in res.summary["warnings"])
    assert any(e.get("group") == "C" for e in res.summary["not_computed"])
    assert value(res.results, "accuracy_gap", attribute="g").value == pytest.approx(1 / 3)


def test_class_without_prompts_marks_zero_shot_not_computed():
    table, emb = fixture_inputs()
    spec = _spec(classes={"labels": ["cat", "dog"], "templates": [], "prompts": {"cat": ["cat"]}})
    assert any("'dog' has no prompts" in w for w in spec.warnings)
    res = compute_audit(spec, table, {"model": emb})
    acc = value(res.results, "accuracy", group=schema.OVERALL)
    assert acc.status == "not_computed" and "'dog'" in acc.note and math.isnan(acc.value)
    assert value(res.results, "max_skew", prompt="up", attribute="g").value == pytest.approx(LN(1.5))


def test_k_not_smaller_than_data_is_not_computed():
    table, emb = fixture_inputs()
    spec = _spec(skew={"prompts": ["up"], "k": [4, 12, 50]})
    res = compute_audit(spec, table, {"model": emb})
    skipped = res.results[(res.results.metric == "max_skew") & (res.results.status == "not_computed")]
    assert sorted(skipped["k"]) == [12, 50]
    assert all("not smaller than the number of images (12)" in n for n in skipped["note"])
    assert value(res.results, "max_skew", prompt="up", k=4).value == pytest.approx(LN(1.5))


def test_duplicated_prompts_are_reported_and_counted_once():
    spec = _spec(skew={"prompts": ["up", "down", "up"], "k": [4]})
    assert spec.skew.prompts == ("up", "down")
    assert any("duplicated" in w and "'up'" in w for w in spec.warnings)


def test_labels_outside_the_classes_are_not_scored():
    table, emb = fixture_inputs()
    table.loc[0, "label"] = "Cat"
    res = compute_audit(parse_audit_spec(SPEC, "x.yaml"), table, {"model": emb})
    acc = value(res.results, "accuracy", group=schema.OVERALL)
    assert acc.status == "not_computed" and "'Cat' (1 images)" in acc.note

"""The simulator's truth, and a CI-sized validity study of the audit's intervals and gate.

The full study is ``bench/validity.py`` (numbers in VALIDITY.md). Here each rate is judged
against a tolerance set by the binomial error of its replicate count: coverage must reach
``0.95 - 3 * sqrt(0.95 * 0.05 / R)`` and a false-fail rate stay under
``0.05 + 3 * sqrt(0.05 * 0.95 / R)``. A deliberately broken interval (percentile bootstrap
of a proportion at p = 0.99, n = 30) must be caught by the same harness.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtr

from workbench.audit import metrics as M
from workbench.audit.simulate import (
    DEFAULT_CONTROL_PROMPTS,
    ModelBehaviour,
    simulate_audit_inputs,
    top_share_of_groups,
)

REPO = Path(__file__).resolve().parents[1]


def _load_validity():
    if "validity_study" in sys.modules:
        return sys.modules["validity_study"]
    spec = importlib.util.spec_from_file_location("validity_study", REPO / "bench" / "validity.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["validity_study"] = module
    spec.loader.exec_module(module)
    return module


V = _load_validity()
CONCEPT_1, CONCEPT_2 = "a photo of concept one", "a photo of concept two"


# ---------------------------------------------------------------------------------------
# the simulator


def test_top_share_matches_hand_computed_normal_mixture():
    # Two equal groups, shifts (delta, 0), depth 1/2: by symmetry the threshold is delta/2,
    # so the favoured group's share of the top half is Phi(delta/2); Phi(0.5) = 0.691462.
    share = top_share_of_groups(np.array([0.5, 0.5]), np.array([1.0, 0.0]), 0.5)
    assert share[0] == pytest.approx(0.6914624612740131, abs=1e-10)
    assert share.sum() == pytest.approx(1.0, abs=1e-12)
    # No shift: every group's share of any depth is its population share.
    np.testing.assert_allclose(top_share_of_groups(np.array([0.2, 0.3, 0.5]), np.zeros(3), 0.1), [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="depth k/N must lie strictly between 0 and 1"):
        top_share_of_groups(np.array([0.5, 0.5]), np.zeros(2), 1.0)


def test_simulation_is_deterministic_and_unit_norm():
    design = dict(group_sizes={"a": 60, "b": 40}, behaviours={"base": ModelBehaviour(), "tuned": ModelBehaviour(dominance=0.3)})
    one = simulate_audit_inputs(**design, seed=7)
    two = simulate_audit_inputs(**design, seed=7)
    other = simulate_audit_inputs(**design, seed=8)
    pd.testing.assert_frame_equal(one.table, two.table)
    for role in ("base", "tuned"):
        assert np.array_equal(one.embeddings[role].image, two.embeddings[role].image)
        assert not np.array_equal(one.embeddings[role].image, other.embeddings[role].image)
        np.testing.assert_allclose(np.linalg.norm(one.embeddings[role].image, axis=1), 1.0, atol=1e-6)
        for vec in one.embeddings[role].text.values():
            assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-6)
    assert one.table["group"].value_counts().to_dict() == {"a": 60, "b": 40}
    # rows are not sorted by group, labels are balanced within each group
    assert not one.table["group"].is_monotonic_increasing
    counts = one.table.groupby("group")["label"].value_counts().unstack()
    assert counts.loc["a"].tolist() == [20, 20, 20]


def test_zero_shot_prediction_follows_the_design_exactly():
    sim = simulate_audit_inputs({"a": 90, "b": 90}, {"m": ModelBehaviour(accuracy={"a": 1.0, "b": 0.0})}, seed=3)
    emb = sim.embeddings["m"]
    class_vecs = np.stack([emb.text[sim.class_templates[0].replace("{}", c)] for c in sim.classes])
    predicted = np.asarray(sim.classes)[np.argmax(emb.image @ class_vecs.T, axis=1)]
    truth = sim.table["label"].to_numpy()
    in_a = (sim.table["group"] == "a").to_numpy()
    assert (predicted[in_a] == truth[in_a]).all()
    assert (predicted[~in_a] != truth[~in_a]).all()
    # every template of a class has the class's vector, so the ensemble is that vector
    for c in sim.classes:
        vecs = [emb.text[t.replace("{}", c)] for t in sim.class_templates]
        assert all(np.array_equal(vecs[0], v) for v in vecs)


def test_accuracy_counts_are_binomial():
    # 4000 images at p = 0.8: the share correct is within 4 standard errors of 0.8.
    sim = simulate_audit_inputs({"a": 4000}, {"m": ModelBehaviour(accuracy=0.8)}, seed=11)
    emb = sim.embeddings["m"]
    class_vecs = np.stack([emb.text[sim.class_templates[0].replace("{}", c)] for c in sim.classes])
    correct = np.asarray(sim.classes)[np.argmax(emb.image @ class_vecs.T, axis=1)] == sim.table["label"].to_numpy()
    assert abs(correct.mean() - 0.8) < 4 * math.sqrt(0.8 * 0.2 / 4000)


def _empirical_skew(sim, role, prompt, k):
    scores = sim.embeddings[role].image @ sim.embeddings[role].text[prompt]
    codes = pd.Categorical(sim.table["group"], categories=list(sim.groups)).codes
    return M.skew_at_k(scores, codes, len(sim.groups), k, np.full(len(sim.groups), 1 / len(sim.groups)))


def test_planted_association_and_dominance_reach_the_rankings():
    # Large groups: the empirical top-k shares of one data set sit close to the population
    # truth (binomial SE of a share at k = 10000 is about 0.005; tolerance 0.015).
    behaviour = ModelBehaviour(planted={CONCEPT_1: 0.6}, dominance=0.4, favoured_group="b")
    sim = simulate_audit_inputs({"a": 20000, "b": 20000}, {"m": behaviour}, seed=5)
    k = 10000
    for prompt in (CONCEPT_1, CONCEPT_2, DEFAULT_CONTROL_PROMPTS[0]):
        truth = sim.true_skew("m", prompt, k)
        empirical = _empirical_skew(sim, "m", prompt, k)
        np.testing.assert_allclose(0.5 * np.exp(empirical), 0.5 * np.exp([truth["a"], truth["b"]]), atol=0.015)
    # favoured group b: the shift 0.4 alone, at depth 1/4, gives the population value by hand
    t = top_share_of_groups(np.array([0.5, 0.5]), np.array([0.0, 0.4]), 0.25)
    assert sim.true_skew("m", CONCEPT_2, k)["b"] == pytest.approx(math.log(t[1] / 0.5), abs=1e-12)
    # specific skew: 0 for an unplanted prompt, positive for the planted one; panel = population at spread 0
    assert sim.true_specific_skew("m", CONCEPT_2, k)["b"] == pytest.approx(0.0, abs=1e-12)
    planted = sim.true_specific_skew("m", CONCEPT_1, k)
    assert planted["b"] > 0.1 and planted["a"] < -0.1
    population = sim.true_specific_skew("m", CONCEPT_1, k, relative_to="population")
    assert population["b"] == pytest.approx(planted["b"], abs=1e-9)
    assert sim.truth_is_null("m") is False


def test_null_rankings_do_not_depend_on_group():
    sim = simulate_audit_inputs({"a": 20000, "b": 20000}, {"m": ModelBehaviour()}, seed=9)
    assert sim.truth_is_null("m")
    for prompt in (CONCEPT_1, DEFAULT_CONTROL_PROMPTS[3]):
        assert np.abs(_empirical_skew(sim, "m", prompt, 10000)).max() < 0.03
        assert sim.true_skew("m", prompt, 10000) == pytest.approx({"a": 0.0, "b": 0.0}, abs=1e-12)


def test_roles_share_part_of_their_noise():
    sim = simulate_audit_inputs({"a": 3000}, {"base": ModelBehaviour(), "tuned": ModelBehaviour()}, seed=2, shared=0.5)
    base = sim.embeddings["base"].image @ sim.embeddings["base"].text[CONCEPT_1]
    tuned = sim.embeddings["tuned"].image @ sim.embeddings["tuned"].text[CONCEPT_1]
    assert 0.4 < np.corrcoef(base, tuned)[0, 1] < 0.6  # shared variance fraction 0.5


def test_spread_of_group_loadings_is_drawn_per_prompt():
    sim = simulate_audit_inputs({"a": 50, "b": 50}, {"m": ModelBehaviour(dominance=0.5, dominance_spread=0.2)}, seed=4)
    loadings = np.array(list(sim.loadings["m"].values()))
    assert loadings.std() > 0.05 and abs(loadings.mean() - 0.5) < 0.15
    panel = sim.true_specific_skew("m", CONCEPT_1, 25)
    population = sim.true_specific_skew("m", CONCEPT_1, 25, relative_to="population")
    assert panel != population


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(group_sizes={"a": 0}), "group_sizes\\['a'\\] = 0"),
        (dict(behaviours={"m": ModelBehaviour(accuracy={"a": 0.9})}), "has no value for group 'b'"),
        (dict(behaviours={"m": ModelBehaviour(accuracy=1.5)}), "is not a probability"),
        (dict(behaviours={"m": ModelBehaviour(planted={"nope": 1.0})}), "planted names prompts \\['nope'\\]"),
        (dict(behaviours={"m": ModelBehaviour(favoured_group="z")}), "favoured_group 'z'"),
        (dict(control_prompts=(CONCEPT_1,)), "both neutral and control prompts"),
        (dict(class_templates=("no placeholder",)), "needs a '\\{\\}'"),
    ],
)
def test_simulator_rejects_impossible_designs(kwargs, message):
    args = dict(group_sizes={"a": 10, "b": 10}, behaviours={"m": ModelBehaviour()}, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        simulate_audit_inputs(**args)


# ---------------------------------------------------------------------------------------
# the CI-sized study


R_COVERAGE = 60
R_GATE = 40


def _coverage(cell, replicates, adjust=None):
    pooled = {}
    for r in range(replicates):
        for quantity, records in V.coverage_replicate(cell, r, study_seed=101, n_boot=200, adjust=adjust).items():
            pooled.setdefault(quantity, []).extend(records)
    return {q: V.summarise_intervals(rs) for q, rs in pooled.items()}


@pytest.fixture(scope="module")
def edge_cell_coverage():
    return _coverage(V.CoverageCell(30, 0.99), R_COVERAGE)


def test_coverage_tolerance_formula():
    assert V.coverage_tolerance(0.95, 100) == pytest.approx(0.95 - 3 * math.sqrt(0.95 * 0.05 / 100))


@pytest.mark.parametrize("quantity, per_replicate", [("accuracy", 2), ("accuracy_lower", 1), ("difference_zero", 1),
                                                     ("difference_gap", 1), ("skew_null", 1), ("skew_planted", 1)])
def test_reported_intervals_cover_at_the_edge(edge_cell_coverage, quantity, per_replicate):
    # n = 30, p = 0.99: three quarters of the groups are all-correct, the hardest case for
    # an interval. Skew rows of the three groups are dependent, so only R counts for them.
    s = edge_cell_coverage[quantity]
    assert s["missing"] == 0
    assert s["coverage"] >= V.coverage_tolerance(0.95, R_COVERAGE * per_replicate), s


def test_reported_intervals_cover_mid_range():
    summary = _coverage(V.CoverageCell(100, 0.5), R_COVERAGE // 2)
    for quantity in ("accuracy", "difference_zero", "difference_gap", "skew_null", "skew_planted"):
        assert summary[quantity]["coverage"] >= V.coverage_tolerance(0.95, R_COVERAGE // 2), (quantity, summary[quantity])


def _percentile_bootstrap_accuracy(sim, results: pd.DataFrame) -> pd.DataFrame:
    """Replace accuracy intervals by a percentile bootstrap of the proportion (the old, broken way)."""
    out = results.copy()
    rng = np.random.default_rng(0)
    rows = (out["metric"] == "accuracy") & (out["attribute"] == "group")
    for i in out.index[rows]:
        n, p_hat = int(out.at[i, "n"]), float(out.at[i, "value"])
        reps = rng.binomial(n, p_hat, size=400) / n  # a stratified resample of a group is Binomial(n, p_hat)
        out.at[i, "ci_low"], out.at[i, "ci_high"] = np.quantile(reps, [0.025, 0.975])
    return out


def test_harness_catches_a_broken_interval():
    broken = _coverage(V.CoverageCell(30, 0.99), 40, adjust=_percentile_bootstrap_accuracy)["accuracy"]
    # P(30 of 30 correct) = 0.99**30 = 0.74, and then the percentile interval is [1, 1].
    assert broken["coverage"] < V.coverage_tolerance(0.95, 80)
    assert broken["coverage"] == pytest.approx(1 - 0.99**30, abs=0.15)
    assert broken["zero_width"] > 0.5
    assert V.coverage_status(broken) == "below"  # not just noise: the whole interval of the estimate is under 93%
    report = {"accuracy_cells": [{"group_size": 30, "p": 0.99, "p_lower": 0.95, "accuracy": broken}], "skew_cells": []}
    lines = V.coverage_shortfalls(report)
    assert len(lines) == 1 and "accuracy at n=30, p=0.99" in lines[0] and "zero width" in lines[0]
    assert "below the target" in lines[0]


def test_exact_coverage_by_enumeration():
    # the values the study prints next to the audit's Monte Carlo coverage (see test_intervals.py)
    assert V.exact_coverage(100, 0.99) == pytest.approx(0.9816, abs=1e-4)
    assert V.exact_coverage(400, 0.99) == pytest.approx(0.9318, abs=1e-4)
    assert V.exact_coverage(30, 0.99, 0.99) == pytest.approx(1.0, abs=1e-4)
    assert V.exact_coverage(100, 0.95, 0.99) == pytest.approx(0.9723, abs=1e-4)


def _gate(world, replicates):
    families, _ = V.active_families()
    outcomes = [V.gate_replicate(world, r, study_seed=202, n_boot=100, families=tuple(families)) for r in range(replicates)]
    return V.summarise_gate(world, outcomes, families)


def _false_fail_tolerance(replicates):
    return 0.05 + 3 * math.sqrt(0.05 * 0.95 / replicates)


def test_gate_does_not_fail_a_model_without_bias():
    summary = _gate(V.GateWorld("no_bias", 100), R_GATE)
    for name, family in summary["families"].items():
        assert family["fail"]["rate"] <= _false_fail_tolerance(R_GATE), (name, family)
    assert summary["false_fail_overall"]["rate"] <= _false_fail_tolerance(R_GATE)


def test_group_dominance_is_not_a_concept_failure():
    if "specific_max_skew" not in V.engine_metrics() or "group_dominance" not in V.engine_metrics():
        pytest.skip("the engine has no specific_max_skew / group_dominance yet (verdict contract, issue 11)")
    summary = _gate(V.GateWorld("sorts_by_group", 100, dominance=V.DOMINANCE_SHIFT), R_GATE)
    assert summary["families"]["concept"]["fail"]["rate"] <= _false_fail_tolerance(R_GATE)
    assert summary["families"]["dominance"]["should_fire"]
    assert summary["families"]["dominance"]["fail"]["rate"] >= 0.8


def test_gate_finds_large_planted_effects():
    summary = _gate(V.GateWorld("planted", 100, accuracy_gap=0.3, concept_shift=0.75), 15)
    assert summary["accuracy_fail"]["rate"] >= 0.8
    assert summary["difference_excludes_zero"]["rate"] >= 0.8
    assert summary["concept_excludes_zero"]["rate"] >= 0.8
    assert summary["true_concept_specific_max_skew"] > 0.3


@pytest.mark.slow  # several seconds; runs in CI (keeps the default pytest under 3 minutes)
def test_study_report_renders_every_section(tmp_path):
    config = V.StudyConfig(coverage_sizes=(30,), coverage_accuracies=(0.9,), coverage_replicates=2, specific_sizes=(30,),
                           gate_sizes=(50,), null_replicates=2, power_replicates=2, accuracy_gaps=(0.2,),
                           concept_shifts=(0.5,), n_boot=50)
    study = V._json_safe(V.run_study(config))
    json.loads(json.dumps(study))  # JSON-safe: no NaN, no numpy types
    text = V.render_markdown(study, command="python bench/validity.py", machine=V.machine_facts(1))
    for heading in ("## (a) Coverage", "## (b) False fails", "## (c) Power", "python bench/validity.py"):
        assert heading in text
    assert "| 30 | 0.9 |" in text and "| no_bias | 50 |" in text and "| 0.20 |" in text


def test_worker_processes_give_the_same_records():
    families, _ = V.active_families()
    tasks = [(V.GateWorld("no_bias", 40), r, 5, 30, tuple(families)) for r in range(2)]
    serial = V._map(V._gate_task, tasks, 1, None, "serial")
    parallel = V._map(V._gate_task, tasks, 2, None, "parallel")
    assert json.dumps(serial, sort_keys=True) == json.dumps(parallel, sort_keys=True)
    assert serial[0] != serial[1]  # different replicates, different data

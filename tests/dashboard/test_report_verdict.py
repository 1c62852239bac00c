"""The verdict every display shows (workbench.report.verdict): contract summaries as written,
summaries from before the contract with the candidate derived so the reference never decides."""

from __future__ import annotations

import copy

import pytest
from fixture_runs import BASE_ID, contract_checks

from workbench import schema
from workbench.report.results import read_audit
from workbench.report.verdict import derive_direction, infer_kind, read_verdict


@pytest.fixture
def v1_audit(runs_root):
    return read_audit(runs_root / "derm-v1" / "audit" / "derm-fairness")


def _v1_summary_where_only_the_base_fails(summary: dict) -> dict:
    """The schema-1 summary with the tuned gap check passing and a tuned row for the base's failing check."""
    summary = copy.deepcopy(summary)
    checks = summary["checks"]
    checks[1].update(value=0.04, ci_low=0.0, ci_high=0.08, verdict="pass")
    harmful_base = next(c for c in checks if c["model"] == "base" and c["metric"] == "harmful_rate")
    checks.append(dict(harmful_base, model="tuned", value=0.02, ci_low=0.0, ci_high=0.04, verdict="pass"))
    summary["verdict"] = "fail"  # what a schema-1 audit wrote: the worst over every role, the base's included
    return summary


def test_schema_1_verdict_is_the_candidates_not_the_bases(v1_audit):
    summary = _v1_summary_where_only_the_base_fails(v1_audit.summary)
    verdict = read_verdict(summary, v1_audit.table)
    assert verdict.derived and (verdict.candidate, verdict.reference) == ("tuned", "base")
    assert verdict.candidate_id == "runs/derm-v1/model" and verdict.reference_id == BASE_ID
    assert verdict.verdict == "inconclusive"  # pass, pass, inconclusive (small group): the base's fail is not counted
    assert [c.role for c in verdict.checks] == ["delta", "tuned", "delta", "tuned"]
    assert [c.role for c in verdict.reference_checks] == ["base", "base"]
    assert verdict.fixed == (f"harmful labels medium skin: the base model ({BASE_ID}) failed (14.0% [12.0, 16.0]); "
                             "the fine-tuned model (runs/derm-v1/model) passes (2.0% [0.0, 4.0])",)
    assert verdict.headline.startswith("INCONCLUSIVE: 1 of 4 checks of the fine-tuned model (runs/derm-v1/model)")
    summary["checks"] = [c for c in summary["checks"] if c["name"] != "no group regresses"]
    verdict = read_verdict(summary, v1_audit.table)
    assert verdict.verdict == "pass"
    assert verdict.headline == ("PASS: the fine-tuned model (runs/derm-v1/model) passes all 3 checks; the base "
                                "failed 1 of them.")


def test_schema_1_sentences_name_model_attribute_group_direction_interval_and_n(v1_audit):
    verdict = read_verdict(v1_audit.summary, v1_audit.table)
    gap = next(c for c in verdict.checks if c.name == "skin tone accuracy gap")
    assert gap.sentence == ("the fine-tuned model (runs/derm-v1/model): accuracy_gap of skin_tone, dark below light: "
                            "35.0% [10.0, 50.0], n=222 (fail; fail above 10.0%, warn above 5.0%)")
    assert gap.reference_value == pytest.approx(0.10) and gap.reference_verdict == "warn"
    assert gap.new_failure and gap.highlighted  # the base only warned on this check
    dark = next(c for c in verdict.checks if c.name == "no group regresses")
    assert (dark.kind, dark.model, dark.group, dark.direction, dark.value_text, dark.n) == (
        "regression", "fine-tuned (runs/derm-v1/model) vs base", "dark", "dark lower after fine-tuning",
        "-10.0 pp [-35.0, +15.0]", 12)
    assert not dark.highlighted  # inconclusive, not a regression shown as one
    assert next(c for c in verdict.checks if c.group == schema.OVERALL).kind == "domain"


def test_schema_1_single_model_is_the_candidate(runs_root):
    audit = read_audit(runs_root / "derm-base-only" / "audit" / "derm-fairness")
    verdict = read_verdict(audit.summary, audit.table)
    assert (verdict.candidate, verdict.reference, verdict.verdict) == ("base", None, "warn")
    assert verdict.reference_checks == () and verdict.fixed == ()
    assert verdict.headline.startswith(f"WARN: the base model ({BASE_ID}) fails no check but 1 of 1 warn:")


def test_contract_summary_is_shown_as_written(runs_root):
    audit = read_audit(runs_root / "derm-full" / "audit" / "derm-fairness")
    expected = contract_checks("candidate-fails", "runs/derm-full/model")
    verdict = audit.verdict
    assert not verdict.derived and verdict.verdict == "fail" and verdict.headline == expected["headline"]
    assert [c.sentence for c in verdict.checks] == [c["sentence"] for c in expected["checks"]]
    assert [c.kind for c in verdict.checks] == ["domain", "absolute", "regression", "absolute", "absolute",
                                                "absolute", "dominance", "absolute", "regression"]
    assert [c.name for c in verdict.ordered_checks()][:2] == ["skin tone accuracy gap", "concept skew does not grow"]
    assert [c.highlighted for c in verdict.ordered_checks()] == [True, True] + [False] * 7
    assert verdict.fixed == tuple(expected["fixed"])
    assert {c.reference_verdict for c in verdict.checks if c.kind == "regression"} == {None}
    assert verdict.headline_body == expected["headline"][len("FAIL: "):]


def test_contract_with_named_roles(runs_root):
    audit = read_audit(runs_root / "derm-full" / "audit" / "derm-fairness")
    summary = copy.deepcopy(audit.summary)
    summary.update(candidate="x", reference="y", models={"x": {"model": "org/x"}, "y": {"model": "org/y"}})
    for c in summary["checks"]:
        c.update(model="x", model_id="")
    verdict = read_verdict(summary, audit.table)
    assert (verdict.candidate_id, verdict.reference_words) == ("org/x", "y")
    assert {c.model for c in verdict.checks} == {"x (org/x)"}


def test_kinds_and_directions_inferred_for_old_checks(v1_audit):
    table, summary = v1_audit.table, v1_audit.summary
    assert infer_kind({"metric": "group_dominance"}, {"tuned"}) == "dominance"
    assert infer_kind({"metric": "accuracy", "group": schema.OVERALL}, {"delta"}) == "domain"
    assert infer_kind({"metric": "accuracy_gap"}, {"delta"}) == "regression"
    assert infer_kind({"metric": "accuracy_gap"}, {"tuned"}) == "absolute"
    assert infer_kind({"metric": "accuracy_gap", "kind": "regression"}, {"tuned"}) == "regression"
    # sex: female 0.82, male 0.80 for tuned; the audit's reference group is male
    assert derive_direction({"metric": "accuracy_gap", "attribute": "sex"}, "tuned", table, summary, "tuned") == (
        "male", "female", "male below female")
    assert derive_direction({"metric": "accuracy_difference", "attribute": "skin_tone", "group": "dark",
                             "value": -0.35}, "tuned", table, summary, "tuned") == ("dark", "light", "dark below light")
    assert derive_direction({"metric": "max_skew", "attribute": "skin_tone", "prompt": "a close-up of skin", "k": 10,
                             "target": "uniform"}, "base", table, summary, "tuned") == (
        "medium", "", "medium over-represented")
    assert derive_direction({"metric": "min_skew", "attribute": "skin_tone", "prompt": "a close-up of skin", "k": 10,
                             "target": "uniform"}, "base", table, summary, "tuned") == (
        "dark", "", "dark under-represented")
    # a change row names the candidate's groups
    assert derive_direction({"metric": "accuracy_gap", "attribute": "skin_tone"}, "delta", table, summary, "tuned") == (
        "dark", "light", "dark below light")
    assert derive_direction({"metric": "ndkl"}, "tuned", table, summary, "tuned") == ("", "", "")

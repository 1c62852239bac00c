"""Audit definition files: strict schema, clear errors, the shipped audits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from workbench.audit.spec import AuditSpecError, load_audit_spec, parse_audit_spec

AUDITS = Path(__file__).resolve().parents[1] / "audits"
MINIMAL = {"name": "t", "attributes": [{"column": "g"}]}


def test_shipped_audits_parse_cleanly():
    derm = load_audit_spec(AUDITS / "derm_demo.yaml")
    assert derm.warnings == ()
    assert derm.group_columns == ("skin_tone", "sex")
    assert derm.intersections == (("skin_tone", "sex"),)
    assert derm.classes.labels == ("melanoma", "nevus", "basal cell carcinoma", "seborrheic keratosis")
    assert derm.classes.prompts_for("nevus")[0] == "dermoscopy image of nevus"
    assert derm.skew.k == (50, 100) and derm.skew.targets == ("uniform",)
    assert derm.attribute("skin_tone").reference == "light"
    json.dumps(derm.to_dict())  # goes into summary.json as is

    concept = {c.name: c for c in derm.policy.checks}
    assert concept["concept_skew_sex"].metric == "specific_max_skew" and concept["concept_skew_sex"].prompt is None
    assert concept["group_dominance_sex"].kind == "dominance"
    assert concept["concept_skew_sex_change_after_tuning"].kind == "regression"
    assert derm.skew.controls[-1] == "an image from a dermatology clinic" and len(derm.skew.controls) == 28

    social = load_audit_spec(AUDITS / "fairface_social.yaml")
    assert {c.metric for c in social.policy.checks} >= {"specific_max_skew", "group_dominance"}
    assert social.warnings == ()
    assert social.group_columns == ("race", "gender", "age")
    assert "Latino_Hispanic" in social.attribute("race").groups
    assert len(social.skew.prompts) == 3 * 28
    assert social.classes.prompts_for("Female")[0] == "a photo of a woman."
    assert "gorilla" in social.harmful.labels
    assert social.group_prompts[0].prompt("Female", "a doctor") == "a photo of a woman who is a doctor"


def _error(data) -> str:
    with pytest.raises(AuditSpecError) as err:
        parse_audit_spec(data, "audits/x.yaml")
    return str(err.value)


def test_unknown_key_is_named():
    msg = _error({**MINIMAL, "skew": {"prompts": ["a"], "k": [5], "topk": 3}})
    assert msg.startswith("audits/x.yaml: skew.topk: unknown key")
    assert "allowed keys here" in msg


def test_wrong_type_is_named():
    assert "skew.k[1]: expected an integer, got str 'ten'" in _error({**MINIMAL, "skew": {"prompts": ["a"], "k": [5, "ten"]}})
    assert "attributes: expected a non-empty list" in _error({"name": "t", "attributes": "skin_tone"})
    assert "policy.checks[0].warn: expected a number" in _error(
        {**MINIMAL, "policy": {"checks": [{"metric": "accuracy_gap", "warn": "high", "fail": 0.1}]}}
    )


def test_missing_required_key():
    assert "missing required key 'attributes'" in _error({"name": "t"})
    assert "missing required key 'k'" in _error({**MINIMAL, "skew": {"prompts": ["a"]}})


def test_semantic_errors():
    assert "must contain {}" in _error({**MINIMAL, "classes": {"templates": ["a photo"]}})
    assert "unknown metric 'acc_gap'" in _error({**MINIMAL, "policy": {"checks": [{"metric": "acc_gap", "warn": 0, "fail": 1}]}})
    assert "milder than warn" in _error(
        {**MINIMAL, "policy": {"checks": [{"metric": "accuracy_gap", "warn": 0.1, "fail": 0.05}]}}
    )
    assert "not one of the attributes" in _error({**MINIMAL, "intersections": [["g", "h"]]})
    assert "'z' is not one of the listed groups" in _error(
        {"name": "t", "attributes": [{"column": "g", "groups": ["a"], "reference": "z"}]}
    )
    assert "also task classes" in _error({**MINIMAL, "classes": {"labels": ["x"], "templates": ["{}"]}, "harmful": {"labels": ["x"]}})
    assert "'data2' is not one of" in _error({**MINIMAL, "skew": {"prompts": ["a"], "k": 5, "targets": ["data2"]}})


def test_yaml_is_data_never_code(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo hi']\nattributes: [{column: g}]\n")
    with pytest.raises(AuditSpecError, match="not valid YAML"):
        load_audit_spec(p)


def test_missing_file_message(tmp_path):
    with pytest.raises(AuditSpecError, match="audit definition not found"):
        load_audit_spec(tmp_path / "nope.yaml")


def test_defaults_are_filled_in():
    spec = parse_audit_spec(yaml.safe_load("name: t\nattributes: [{column: g}]\nskew: {prompts: [a], k: 10}\n"))
    d = spec.to_dict()
    assert d["min_group_size"] == 30
    assert d["bootstrap"] == {"n_boot": 1000, "seed": 0, "level": 0.95, "n_perm": 5000}
    assert list(d["skew"]["targets"]) == ["uniform"] and list(d["skew"]["k"]) == [10]
    assert d["policy"]["alpha"] == 0.05 and d["policy"]["domain_check"] is True


def test_templates_times_concepts_and_check_defaults():
    spec = parse_audit_spec(
        {
            **MINIMAL,
            "skew": {"templates": ["a {} person", "{}"], "concepts": ["good", "evil"], "k": [3]},
            "policy": {"checks": [{"metric": "accuracy_min_ratio", "warn": 0.9, "fail": 0.8}]},
        }
    )
    assert spec.skew.prompts == ("a good person", "good", "a evil person", "evil")  # concept-major
    check = spec.policy.checks[0]
    assert check.direction == "lower_is_worse" and check.name == "accuracy_min_ratio"


def test_control_prompts_default_replace_and_extend():
    from workbench.audit.controls import DEFAULT_CONTROL_PROMPTS

    skew = {"prompts": ["a", "b"], "k": [5]}
    assert parse_audit_spec({**MINIMAL, "skew": skew}).skew.controls == DEFAULT_CONTROL_PROMPTS
    assert len(DEFAULT_CONTROL_PROMPTS) >= 20
    replaced = parse_audit_spec({**MINIMAL, "skew": {**skew, "controls": ["c1", "c2"], "extra_controls": ["c3"]}})
    assert replaced.skew.controls == ("c1", "c2", "c3")
    extended = parse_audit_spec({**MINIMAL, "skew": {**skew, "extra_controls": ["c3", "a"]}})
    assert extended.skew.controls == (*DEFAULT_CONTROL_PROMPTS, "c3")  # a concept prompt is never its own control
    assert any("'a'" in w and "also concept prompts" in w for w in extended.warnings)
    assert "at least two control prompts" in _error({**MINIMAL, "skew": {**skew, "controls": ["a", "c1"]}})
    assert list(extended.to_dict()["skew"]["controls"])[-1] == "c3"  # written into summary.json


def test_check_kinds_follow_from_their_fields():
    checks = [
        {"metric": "accuracy_gap", "warn": 0.05, "fail": 0.1},
        {"metric": "accuracy_gap", "models": ["delta"], "warn": 0.03, "fail": 0.06},
        {"metric": "specific_max_skew", "regression": True, "warn": 0.1, "fail": 0.2},
        {"metric": "accuracy", "group": "__overall__", "regression": True, "warn": 0.0, "fail": -0.02},
        {"metric": "group_dominance", "warn": 0.25, "fail": 0.5},
        {"metric": "accuracy", "models": ["base"], "warn": 0.5, "fail": 0.4},
    ]
    spec = parse_audit_spec({**MINIMAL, "policy": {"checks": checks}})
    kinds = [(c.kind, c.models, c.name) for c in spec.policy.checks]
    assert kinds == [
        ("absolute", None, "accuracy_gap"),
        ("regression", ("delta",), "accuracy_gap_change"),
        ("regression", ("delta",), "specific_max_skew_change"),
        ("domain", ("delta",), "accuracy_change"),
        ("dominance", None, "group_dominance"),
        ("absolute", ("base",), "accuracy"),
    ]
    assert spec.policy.domain_check is True
    assert parse_audit_spec({**MINIMAL, "policy": {"domain_check": False}}).policy.domain_check is False
    assert "drop models" in _error({**MINIMAL, "policy": {"checks": [
        {"metric": "accuracy_gap", "regression": True, "models": ["tuned"], "warn": 0.1, "fail": 0.2}]}})
    assert "mixes the regression role" in _error({**MINIMAL, "policy": {"checks": [
        {"metric": "accuracy_gap", "models": ["delta", "tuned"], "warn": 0.1, "fail": 0.2}]}})
    assert "policy.domain_check: expected true or false" in _error({**MINIMAL, "policy": {"domain_check": "yes"}})
    assert "automatic domain check" in _error({**MINIMAL, "policy": {"checks": [
        {"name": "domain_accuracy_gain", "metric": "accuracy_gap", "warn": 0.1, "fail": 0.2}]}})

"""The audit families as a registry: one declaration per metric, composed by compute_audit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from test_audit_core import SPEC, fixture_inputs, value
from workbench import schema
from workbench.audit import core
from workbench.audit.controls import DEFAULT_CONTROL_PROMPTS
from workbench.audit.core import compute_audit, prompts_needed
from workbench.audit.families import DEFAULT_DIRECTION, FAMILIES, METRIC_INFO, METRICS, Family, MetricInfo
from workbench.audit.families.base import DIRECTIONS
from workbench.audit.spec import parse_audit_spec
from workbench.audit import spec as spec_module


def test_one_table_feeds_the_schema_and_the_policy_defaults():
    assert schema.METRICS == METRICS
    assert spec_module.DEFAULT_DIRECTION is DEFAULT_DIRECTION
    declared = [m.name for f in FAMILIES for m in f.metrics]
    assert len(declared) == len(set(declared)) == len(METRIC_INFO)
    for name, info in METRIC_INFO.items():
        assert METRICS[name] == info.description
        assert DEFAULT_DIRECTION.get(name) == info.direction
    # a p-value is reported, never checked against thresholds
    assert "weat_p_value" in METRICS and "weat_p_value" not in DEFAULT_DIRECTION
    assert DEFAULT_DIRECTION["accuracy_gap"] == "higher_is_worse"
    assert DEFAULT_DIRECTION["accuracy_min_ratio"] == "lower_is_worse"


def test_a_check_on_a_metric_takes_its_declared_direction():
    for name in ("accuracy_gap", "harmful_rate", "group_prompt_preference", "skew"):
        spec = parse_audit_spec({"name": "t", "attributes": [{"column": "g"}],
                                 "policy": {"checks": [{"metric": name, "warn": 0.1, "fail": 0.1}]}})
        assert spec.policy.checks[0].direction == METRIC_INFO[name].direction


def test_a_metric_declared_with_an_unknown_direction_is_refused():
    with pytest.raises(ValueError, match="'sideways' is not one of"):
        MetricInfo("m", "d", "sideways")
    assert set(DEFAULT_DIRECTION.values()) <= set(DIRECTIONS)


def test_prompts_come_family_by_family():
    spec = parse_audit_spec(SPEC, "fixture.yaml")
    # classes (cat, dog), skew prompts (up, down) and the control panel, the harmful label (rock)
    controls = list(DEFAULT_CONTROL_PROMPTS)
    assert prompts_needed(spec, None) == ["cat", "dog", "up", "down", *controls, "rock"]
    by_family = {f.name: f.prompts(spec, None) for f in FAMILIES}
    assert by_family["accuracy"] == ["cat", "dog"] and by_family["harmful"] == ["rock"]


def test_every_row_comes_from_a_declared_metric_of_its_family(monkeypatch):
    table, emb = fixture_inputs()
    spec = parse_audit_spec(SPEC, "fixture.yaml")
    seen: dict[str, set[str]] = {}
    for family in FAMILIES:
        def only(ctx, family=family):
            before = len(ctx.collector.rows)
            family.compute(ctx)
            seen.setdefault(family.name, set()).update(r["metric"] for r in ctx.collector.rows[before:])
        monkeypatch.setattr(core, "FAMILIES", tuple(dataclasses.replace(f, compute=only) if f is family else f
                                                      for f in core.FAMILIES))
    compute_audit(spec, table, {"model": emb})
    for family in FAMILIES:
        assert seen.get(family.name, set()) <= {m.name for m in family.metrics}, family.name
    assert seen["accuracy"] >= {"accuracy", "accuracy_gap"} and "skew" in seen["skew"]


def test_adding_a_family_is_one_registry_entry(monkeypatch):
    """A family listed in the registry is computed for every role, checked and summarised like the others."""

    def mean_cosine(ctx):
        sims = ctx.image @ ctx.text["up"]
        for v in ctx.views:
            for gi, g in enumerate(v.groups):
                rows = v.codes == gi
                ctx.collector.add(ctx.role, "mean_cosine_up", float(sims[rows].mean()), None, attribute=v.name,
                                  group=g, n=int(rows.sum()))

    extra = Family(name="mean_cosine", metrics=(MetricInfo("mean_cosine_up", "mean cosine to 'up'", "higher_is_worse"),),
                   prompts=lambda spec, labels: ["up"], compute=mean_cosine)
    monkeypatch.setattr(core, "FAMILIES", core.FAMILIES + (extra,))
    table, emb = fixture_inputs()
    res = compute_audit(parse_audit_spec(SPEC, "fixture.yaml"), table, {"model": emb})
    a = value(res.results, "mean_cosine_up", group="A")
    expected = float(np.mean(emb.image[:6] @ emb.text["up"]))
    assert a.value == pytest.approx(expected) and a.n == 6

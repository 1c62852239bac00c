"""Known answers for the verdict, on embeddings built here so every effect is planted exactly.

The embedding space has one axis per class, one shared "group cue" axis, one axis per skew
prompt (concept prompts and control prompts alike) and a filler axis that gives every image
the same norm. So, for an image of group g:

- its zero-shot prediction is its true class with the probability the design gives g
  (class prompts are the class axes; the image carries weight only on its predicted class);
- its score for a skew prompt p is, up to one positive factor shared by all images,
  ``z_ip + planted[p][g] + beta * [g is the cue group]`` with z_ip ~ N(0, 1): ``planted``
  associates one concept with one group, ``beta`` makes the model rank images by group
  whatever the prompt (every prompt's text loads on the group-cue axis).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from workbench import schema
from workbench.audit.__main__ import format_summary
from workbench.audit.controls import DEFAULT_CONTROL_PROMPTS
from workbench.audit.core import ModelEmbeddings, compute_audit
from workbench.audit.spec import DOMAIN_CHECK_NAME, parse_audit_spec

CLASSES = ("circle", "square")
TEMPLATE = "a drawing of a {}."
GROUPS = ("light", "dark")
PLANTED = "a suspicious lesion"
UNRELATED = ("a photo of a lesion", "a skin lesion", "an image of a mole")
CONCEPT_CHECK = {"name": "concept", "metric": "specific_max_skew", "attribute": "skin_tone", "k": 100,
                 "target": "uniform", "warn": 0.2, "fail": 0.4}
RAW_SKEW_CHECK = {"name": "raw_skew", "metric": "max_skew", "attribute": "skin_tone", "k": 100, "target": "uniform",
                  "warn": 0.2, "fail": 0.4}
DOMINANCE_CHECK = {"name": "dominance", "metric": "group_dominance", "attribute": "skin_tone", "k": 100,
                   "target": "uniform", "warn": 0.25, "fail": 0.5}
GAP_CHECK = {"name": "gap", "metric": "accuracy_gap", "attribute": "skin_tone", "warn": 0.05, "fail": 0.10}


def make_spec(checks, *, skew: bool = True, n_boot: int = 300, skew_section: dict | None = None):
    definition = {
        "name": "known",
        "attributes": [{"column": "skin_tone", "groups": list(GROUPS), "reference": "light"}],
        "classes": {"labels": list(CLASSES), "templates": [TEMPLATE]},
        "policy": {"checks": checks},
        "bootstrap": {"n_boot": n_boot, "seed": 0},
    }
    if skew:
        definition["skew"] = skew_section or {"prompts": [PLANTED, *UNRELATED], "k": [100]}
    return parse_audit_spec(definition, "known.yaml")


def make_table(per_group: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng([seed, 0])
    n = per_group * len(GROUPS)
    return pd.DataFrame({"row": np.arange(n), "label": rng.choice(CLASSES, n),
                         "skin_tone": np.repeat(GROUPS, per_group)})


def make_model(table: pd.DataFrame, seed: int, *, accuracy: dict[str, float],
               planted: dict[str, tuple[str, float]] | None = None, cue_group: str = "dark", beta: float = 0.0,
               name: str = "model") -> ModelEmbeddings:
    """One model's embeddings of ``table``'s images under the design described in the module docstring."""
    rng = np.random.default_rng([seed, 1])
    prompts = [PLANTED, *UNRELATED, *DEFAULT_CONTROL_PROMPTS]
    n, n_classes = len(table), len(CLASSES)
    cue, first_prompt = n_classes, n_classes + 1
    dim = first_prompt + len(prompts) + 1  # + filler
    groups = table["skin_tone"].to_numpy()
    truth = np.array([CLASSES.index(c) for c in table["label"]])
    correct = rng.random(n) < np.array([accuracy[g] for g in groups])
    wrong = (truth + rng.integers(1, n_classes, n)) % n_classes
    pred = np.where(correct, truth, wrong)
    image = np.zeros((n, dim))
    image[np.arange(n), pred] = 3.0
    image[:, cue] = (groups == cue_group).astype(float)
    z = rng.standard_normal((n, len(prompts)))
    for p, (group, shift) in (planted or {}).items():
        z[:, prompts.index(p)] += shift * (groups == group)
    image[:, first_prompt:first_prompt + len(prompts)] = z
    radius = np.linalg.norm(image, axis=1).max() + 1.0
    image[:, -1] = np.sqrt(radius**2 - (image**2).sum(axis=1))
    image /= radius
    text = {}
    for c in CLASSES:
        text[TEMPLATE.replace("{}", c)] = np.eye(dim)[CLASSES.index(c)]
    for i, p in enumerate(prompts):
        v = np.zeros(dim)
        v[first_prompt + i], v[cue] = 1.0, beta
        text[p] = v / np.linalg.norm(v)
    return ModelEmbeddings(image.astype(np.float32), text, name, f"fp-{name}")


def row(result, metric, model="model", **where) -> pd.Series:
    r = result.results
    r = r[(r.metric == metric) & (r.model == model)]
    for key, val in where.items():
        r = r[r[key] == val]
    assert len(r) == 1, (metric, where, len(r))
    return r.iloc[0]


def checks(result, name) -> list[dict]:
    return [c for c in result.summary["checks"] if c["name"] == name]


EQUAL = {"light": 0.9, "dark": 0.9}


# ---------------------------------------------------------------------------------------
# prompt-specific association


def test_a_concept_planted_in_one_group_is_found_and_unrelated_prompts_are_not():
    table = make_table(400, seed=1)
    model = make_model(table, 1, accuracy=EQUAL, planted={PLANTED: ("dark", 1.5)})
    result = compute_audit(make_spec([CONCEPT_CHECK]), table, {"model": model})
    where = dict(attribute="skin_tone", k=100, target="uniform")
    planted = row(result, "specific_skew", prompt=PLANTED, group="dark", **where)
    assert planted.value > 0.4 and planted.ci_low > 0
    for prompt in UNRELATED:
        for g in GROUPS:
            r = row(result, "specific_skew", prompt=prompt, group=g, **where)
            assert r.ci_low <= 0 <= r.ci_high, (prompt, g, r.value, r.ci_low, r.ci_high)
    by_prompt = {c["prompt"]: c for c in checks(result, "concept")}
    assert set(by_prompt) == {PLANTED, *UNRELATED}  # one check row per neutral prompt
    assert by_prompt[PLANTED]["verdict"] == "fail"
    assert by_prompt[PLANTED]["worse_group"] == "dark" and by_prompt[PLANTED]["better_group"] == "light"
    assert f"'{PLANTED}' returns dark (skin_tone) images" in by_prompt[PLANTED]["sentence"]
    # The sentence's plain top-100 counts, read back from the Skew@k rows, equal the ranking's own.
    top = result.rankings[(result.rankings.prompt == PLANTED) & (result.rankings["rank"] <= 100)]
    seen = top["skin_tone"].value_counts()
    assert seen.sum() == 100 and seen["dark"] > seen["light"]
    sentence = by_prompt[PLANTED]["sentence"]
    assert f"(dark {seen['dark']}, light {seen['light']} of the 100; a typical control prompt: dark " in sentence
    # ... against what the controls give: no group cue planted, so about half each
    typical = re.search(r"a typical control prompt: dark (\d+), light (\d+); specific MaxSkew@100", sentence)
    assert typical and all(35 <= int(x) <= 65 for x in typical.groups()), sentence
    assert all(by_prompt[p]["verdict"] != "fail" for p in UNRELATED)
    assert result.summary["verdict"] == "fail" and PLANTED in result.summary["headline"]
    # the controls themselves show no skew: the model does not rank by group
    dominance = row(result, "group_dominance", prompt=schema.CONTROL_PANEL, **where)
    assert dominance.value <= 2 / len(DEFAULT_CONTROL_PROMPTS) and dominance.n == len(DEFAULT_CONTROL_PROMPTS)


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_a_model_that_sorts_everything_by_group_fails_dominance_not_the_concepts(seed):
    table = make_table(400, seed=seed)
    model = make_model(table, seed, accuracy=EQUAL, beta=1.0, cue_group="dark")
    result = compute_audit(make_spec([CONCEPT_CHECK, RAW_SKEW_CHECK, DOMINANCE_CHECK]), table, {"model": model})
    # every prompt, unrelated ones included, shows raw skew: raw MaxSkew cannot tell the cases apart
    assert all(c["value"] > 0.3 for c in checks(result, "raw_skew"))
    # relative to the controls no concept stands out
    assert [c["verdict"] for c in checks(result, "concept")].count("fail") == 0
    (dominance,) = checks(result, "dominance")
    assert dominance["verdict"] == "fail" and dominance["value"] >= 0.9
    assert dominance["worse_group"] == "dark" and dominance["kind"] == "dominance"
    assert "ranks images by skin_tone whatever the prompt" in dominance["sentence"]
    assert "most often dark" in dominance["sentence"]


def test_specific_skew_is_skew_minus_the_control_mean_and_its_interval_resamples_controls():
    table = make_table(200, seed=5)
    model = make_model(table, 5, accuracy=EQUAL, beta=0.5)
    spec = make_spec([])
    result = compute_audit(spec, table, {"model": model})
    where = dict(attribute="skin_tone", k=100, target="uniform", group="dark")
    skew = row(result, "skew", prompt=PLANTED, **where).value
    # the control mean by hand: the same audit with the controls as its concept prompts
    as_concepts = make_spec([], skew_section={"prompts": list(DEFAULT_CONTROL_PROMPTS), "k": [100],
                                              "controls": ["unused 1", "unused 2"]})
    controls_skew = compute_audit(as_concepts, table, {"model": model}).results
    mean = controls_skew[(controls_skew.metric == "skew") & (controls_skew.group == "dark")]["value"].mean()
    assert row(result, "specific_skew", prompt=PLANTED, **where).value == pytest.approx(skew - mean, abs=1e-9)
    key = ("model", "specific_skew", "skin_tone", "dark", "", PLANTED, 100, "uniform")
    skew_key = ("model", "skew", "skin_tone", "dark", "", PLANTED, 100, "uniform")
    # wider than the prompt's own skew interval would be if the controls were held fixed: they vary too
    assert np.std(result.replicates[key]) > 0 and not np.allclose(result.replicates[key], result.replicates[skew_key] - mean)


# ---------------------------------------------------------------------------------------
# accuracy, with the worse group named


@pytest.mark.parametrize("seed", [6, 7])
def test_lower_accuracy_in_one_group_fails_naming_it_and_the_equal_control_passes(seed):
    table = make_table(400, seed=seed)
    spec = make_spec([GAP_CHECK], skew=False)
    low = compute_audit(spec, table, {"model": make_model(table, seed, accuracy={"light": 0.9, "dark": 0.7})})
    (gap,) = checks(low, "gap")
    assert gap["verdict"] == "fail"
    assert (gap["worse_group"], gap["better_group"], gap["direction_text"]) == ("dark", "light", "dark below light")
    assert "dark (skin_tone) is" in gap["sentence"] and "points below light" in gap["sentence"]
    assert "the model (model)" in gap["sentence"].lower() and "n=400 vs 400" in gap["sentence"]
    equal = compute_audit(spec, table, {"model": make_model(table, seed, accuracy=EQUAL)})
    assert checks(equal, "gap")[0]["verdict"] == "pass" and equal.summary["verdict"] == "pass"
    assert equal.summary["headline"] == "PASS: the model (model) passes all 1 checks."


# ---------------------------------------------------------------------------------------
# candidate and reference


def test_a_candidate_worse_than_its_reference_fails_the_domain_check(tmp_path):
    table = make_table(300, seed=8)
    base = make_model(table, 8, accuracy={"light": 0.8, "dark": 0.8}, name="base-model")
    tuned = make_model(table, 9, accuracy={"light": 0.6, "dark": 0.6}, name="runs/x/model")
    result = compute_audit(make_spec([GAP_CHECK], skew=False), table, {"base": base, "tuned": tuned})
    s = result.summary
    assert (s["candidate"], s["reference"]) == ("tuned", "base")
    (domain,) = checks(result, DOMAIN_CHECK_NAME)
    assert domain["kind"] == "domain" and domain["model"] == "delta" and domain["verdict"] == "fail"
    assert domain["value"] < -0.1 and domain["ci_high"] < 0 and domain["model_id"] == "runs/x/model"
    assert domain["reference_value"] == pytest.approx(row(result, "accuracy", model="base", group=schema.OVERALL).value)
    assert "after fine-tuning, zero-shot accuracy fell from" in domain["sentence"]
    assert s["verdict"] == "fail" and s["headline"].startswith("FAIL: the fine-tuned model (runs/x/model) fails")
    assert "zero-shot accuracy fell" in s["headline"]
    printed = format_summary(s, tmp_path)
    assert printed.splitlines()[0] == s["headline"]
    assert f"FAIL         {domain['sentence']}" in printed


def test_base_fails_and_candidate_passes_the_headline_is_pass_and_names_the_fix():
    table = make_table(400, seed=10)
    base = make_model(table, 10, accuracy={"light": 0.9, "dark": 0.6}, name="base-model")
    tuned = make_model(table, 11, accuracy={"light": 0.95, "dark": 0.95}, name="runs/y/model")
    result = compute_audit(make_spec([GAP_CHECK], skew=False), table, {"base": base, "tuned": tuned})
    s = result.summary
    assert [c["model"] for c in s["checks"]] == ["tuned", "delta"]  # the candidate's gap, the domain check
    assert all(c["verdict"] == "pass" for c in s["checks"]) and s["verdict"] == "pass"
    (base_gap,) = s["reference_checks"]
    assert base_gap["model"] == "base" and base_gap["verdict"] == "fail" and base_gap["worse_group"] == "dark"
    assert s["headline"] == ("PASS: the fine-tuned model (runs/y/model) passes all 2 checks; "
                             "the base model failed 1 of them (fixed: gap, dark below light).")
    assert len(s["fixed"]) == 1 and "dark (skin_tone) is" in s["fixed"][0]
    (tuned_gap,) = [c for c in s["checks"] if c["name"] == "gap"]
    assert tuned_gap["reference_value"] == pytest.approx(base_gap["value"])


def test_explicit_candidate_and_reference_roles():
    table = make_table(200, seed=12)
    a = make_model(table, 12, accuracy=EQUAL, name="a-id")
    b = make_model(table, 13, accuracy=EQUAL, name="b-id")
    spec = make_spec([GAP_CHECK], skew=False)
    with pytest.raises(ValueError, match="name the one it judges with candidate="):
        compute_audit(spec, table, {"x": a, "y": b})
    result = compute_audit(spec, table, {"x": a, "y": b}, candidate="x", reference="y")
    assert (result.summary["candidate"], result.summary["reference"]) == ("x", "y")
    delta = row(result, "accuracy", model="delta", group=schema.OVERALL)
    assert delta.value == pytest.approx(row(result, "accuracy", model="x", group=schema.OVERALL).value
                                        - row(result, "accuracy", model="y", group=schema.OVERALL).value)
    assert "compared with model 'y' (b-id)" in checks(result, DOMAIN_CHECK_NAME)[0]["sentence"]


# ---------------------------------------------------------------------------------------
# intervals at the edges


def test_a_perfect_group_gets_a_wilson_interval_and_a_zero_width_interval_never_passes():
    table = make_table(394, seed=14)
    model = make_model(table, 14, accuracy={"light": 1.0, "dark": 1.0})
    result = compute_audit(make_spec([GAP_CHECK], skew=False), table, {"model": model})
    dark = row(result, "accuracy", attribute="skin_tone", group="dark")
    assert dark.value == 1.0 and dark.ci_high == 1.0
    # Wilson 394/394: lower bound n / (n + z^2)
    z = 1.959963984540054
    assert dark.ci_low == pytest.approx(394 / (394 + z * z), abs=1e-9)
    difference = row(result, "accuracy_difference", attribute="skin_tone", group="dark")
    assert difference.ci_low < 0 < difference.ci_high  # Newcombe: 0 - 0 still has width
    (gap,) = checks(result, "gap")
    assert (gap["value"], gap["ci_low"], gap["ci_high"]) == (0.0, 0.0, 0.0)  # the bootstrap cannot show uncertainty
    assert gap["verdict"] == "inconclusive" and "zero width" in gap["reason"]
    assert "Wilson" in result.summary["conventions"]["intervals"]["accuracy"]
    assert "Newcombe" in result.summary["conventions"]["intervals"]["accuracy_difference"]
    assert math.isclose(row(result, "accuracy", group=schema.OVERALL).ci_high, 1.0)


def test_top_k_counts_read_back_from_skew_rows_by_hand():
    from workbench.audit.verdict import _Rows, _top_k_counts

    def skew_rows(target, counts, sizes, k):
        out = []
        total = sum(sizes.values())
        for g, c in counts.items():
            share = 1 / len(counts) if target == "uniform" else sizes[g] / total
            out.append({"model": "m", "metric": "skew", "attribute": "tone", "group": g, "label": "", "prompt": "p",
                        "k": k, "target": target, "value": math.log(max(c, 1) / k / share), "n": sizes[g],
                        "status": "ok", "note": "absent from the top k; share counted as 1/k" if c == 0 else ""})
        return out

    sizes = {"light": 500, "medium": 300, "dark": 200}
    # data target, dark absent (its skew row counts it as 1 image: the note says 0)
    counts = {"light": 70, "medium": 30, "dark": 0}
    rows = _Rows(pd.DataFrame(skew_rows("data", counts, sizes, 100)), "m", None)
    assert _top_k_counts(rows, "m", "tone", "p", 100, "data") == counts
    counts = {"light": 20, "medium": 25, "dark": 5}
    rows = _Rows(pd.DataFrame(skew_rows("uniform", counts, sizes, 50)), "m", None)
    assert _top_k_counts(rows, "m", "tone", "p", 50, "uniform") == counts
    # a group's row missing: the rest cannot be trusted to sum to k, so no counts at all
    rows = _Rows(pd.DataFrame(skew_rows("uniform", counts, sizes, 50)[:2]), "m", None)
    assert _top_k_counts(rows, "m", "tone", "p", 50, "uniform") == {}


def test_control_counts_are_the_geometric_mean_count_the_specific_skew_compares_against():
    from workbench.audit.verdict import _control_counts, _Rows

    k, share = 100, 0.5
    # The prompt's top 100: 38 female, 62 male. Two control prompts: (10, 90) and (40, 60).
    prompt = {"female": 38, "male": 62}
    controls = [{"female": 10, "male": 90}, {"female": 40, "male": 60}]
    rows = []
    for g in ("female", "male"):
        skew = math.log(prompt[g] / k / share)
        mean_control = sum(math.log(c[g] / k / share) for c in controls) / len(controls)
        for metric, value in (("skew", skew), ("specific_skew", skew - mean_control)):
            rows.append({"model": "m", "metric": metric, "attribute": "sex", "group": g, "label": "", "prompt": "p",
                         "k": k, "target": "uniform", "value": value, "n": 500, "status": "ok", "note": ""})
    typical = _control_counts(_Rows(pd.DataFrame(rows), "m", None), "m", "sex", "p", k, "uniform")
    assert typical["female"] == pytest.approx(math.sqrt(10 * 40)) and typical["male"] == pytest.approx(math.sqrt(90 * 60))
    # the sentence's factor exp(specific_f - specific_m) is the ratio of the two count ratios
    factor = (38 / 62) / (typical["female"] / typical["male"])
    spec = {r["group"]: r["value"] for r in rows if r["metric"] == "specific_skew"}
    assert math.exp(spec["female"] - spec["male"]) == pytest.approx(factor)

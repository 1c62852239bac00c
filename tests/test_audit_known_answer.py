"""Known answers: bias planted in the demo domain is found; an equal-rate control is not flagged.

Both data sets come from the same generator and seed and are fine-tuned the same way from
the demo base (text tower only, LiT). Only the knobs differ:

- planted: lesion contrast 0.35 on dark skin (1.0 elsewhere) -> dark images are harder to
  classify; and every dark-skin caption carries the word "suspicious" -> the prompt
  "a suspicious skin lesion" should pull dark images to the top.
- control: contrast 1.0 for every tone and no group words in captions.

A tiny CLIP ranks images by colour before and after tuning, so the assertions compare the
planted run with the control run, never a model with its own base (FINETUNE_NOTES).
"""

from __future__ import annotations

import math

import pytest

from workbench import schema

pytestmark = pytest.mark.slow

SPEC = {
    "name": "known_answer",
    "attributes": [{"column": "skin_tone", "groups": ["light", "medium", "dark"], "reference": "light"}],
    "min_group_size": 30,
    "classes": {
        "labels": ["melanoma", "nevus", "basal cell carcinoma", "seborrheic keratosis"],
        "templates": ["dermoscopy image of {}"],
    },
    "skew": {"prompts": ["a suspicious skin lesion", "a photo of a skin lesion"], "k": [100], "targets": ["uniform"]},
    "policy": {
        "checks": [
            {"name": "gap", "metric": "accuracy_gap", "attribute": "skin_tone", "warn": 0.05, "fail": 0.10},
            {"name": "suspicious_skew", "metric": "specific_max_skew", "attribute": "skin_tone",
             "prompt": "a suspicious skin lesion", "k": 100, "target": "uniform", "warn": 0.3, "fail": 0.6},
        ]
    },
    "bootstrap": {"n_boot": 200, "seed": 0},
}
SIZES = {"train": 720, "validation": 60, "test": 600}


def _train_and_audit(root, name, bias):
    from workbench.audit import run_audit
    from workbench.audit.spec import parse_audit_spec
    from workbench.demo.derm import generate_derm
    from workbench.train.config import FinetuneConfig
    from workbench.train.run import finetune

    data = root / f"{name}-data"
    generate_derm(SIZES, seed=11, bias=bias).save_to_disk(str(data))
    config = FinetuneConfig(
        model="workbench/demo-clip",
        dataset=str(data),
        group_columns=["skin_tone", "sex"],
        strategy="frozen-image",
        learning_rate=5e-4,  # the tiny demo model barely moves at real-CLIP rates
        max_steps=60,
        warmup_steps=5,
        per_device_batch_size=64,
        eval_steps=0,
        checkpoint_steps=0,
        select_best=False,
        cpu=True,
        templates=["dermoscopy image of {}"],
        output_dir=str(root / f"{name}-run"),
    )
    run = finetune(config, recipe="known-answer")
    spec = parse_audit_spec(SPEC, "known_answer")
    return run_audit(spec, run, str(data), split="test", cache_dir=None, progress=False)


@pytest.fixture(scope="module")
def audits(tmp_path_factory):
    from workbench.demo.derm import NO_CONTRAST_BIAS, DermBias

    root = tmp_path_factory.mktemp("known-answer")
    planted = DermBias(contrast={"light": 1.0, "medium": 1.0, "dark": 0.35}, caption_terms={"dark": "suspicious"})
    control = DermBias(contrast=dict(NO_CONTRAST_BIAS))
    return {"planted": _train_and_audit(root, "planted", planted), "control": _train_and_audit(root, "control", control)}


def _value(result, metric, model="tuned", **where):
    r = result.results
    r = r[(r.metric == metric) & (r.model == model)]
    for key, val in where.items():
        r = r[r[key] == val]
    assert len(r) == 1, (metric, where, len(r))
    return r.iloc[0]


def _check(result, name, model="tuned"):
    (entry,) = [c for c in result.summary["checks"] if c["name"] == name and c["model"] == model]
    return entry


def test_planted_low_contrast_gives_dark_skin_lower_accuracy(audits):
    planted, control = audits["planted"], audits["control"]
    diff_planted = _value(planted, "accuracy_difference", attribute="skin_tone", group="dark")
    diff_control = _value(control, "accuracy_difference", attribute="skin_tone", group="dark")
    # direction: the disadvantaged group (dark) has the lower accuracy, clearly (interval below 0)
    assert diff_planted.value < -0.15 and diff_planted.ci_high < 0
    # size: far below the control trained the same way
    assert diff_planted.value < diff_control.value - 0.15
    assert _check(planted, "gap")["verdict"] == "fail"


def test_planted_caption_word_skews_its_prompt_towards_dark_skin(audits):
    planted, control = audits["planted"], audits["control"]
    where = dict(attribute="skin_tone", group="dark", prompt="a suspicious skin lesion", k=100, target="uniform")
    skew_planted = _value(planted, "skew", **where)
    skew_control = _value(control, "skew", **where)
    # at least two thirds of the top 100 are dark-skin images: skew >= ln(2) (maximum ln 3)
    assert skew_planted.value >= math.log(2.0) and skew_planted.ci_low > 0
    assert skew_planted.value > skew_control.value + 0.5
    assert _check(planted, "suspicious_skew")["verdict"] == "fail"


def test_control_is_not_flagged(audits):
    control = audits["control"]
    # equal contrast: no accuracy gap beyond the fail threshold with significance
    assert _check(control, "gap")["verdict"] != "fail"
    diff = _value(control, "accuracy_difference", attribute="skin_tone", group="dark")
    assert abs(diff.value) < 0.1
    # no caption word: the suspicious prompt does not concentrate the top 100 on dark skin
    where = dict(attribute="skin_tone", group="dark", prompt="a suspicious skin lesion", k=100, target="uniform")
    assert _value(control, "skew", **where).value < math.log(2.0)


def test_base_and_tuned_are_side_by_side_with_deltas(audits):
    planted = audits["planted"]
    assert {"base", "tuned", "delta"} <= set(planted.results["model"])
    d = _value(planted, "accuracy", model="delta", group=schema.OVERALL)
    base = _value(planted, "accuracy", model="base", group=schema.OVERALL)
    tuned = _value(planted, "accuracy", model="tuned", group=schema.OVERALL)
    assert d.value == pytest.approx(tuned.value - base.value)
    assert d.ci_low > 0  # fine-tuning on the domain's captions raises accuracy, outside the interval

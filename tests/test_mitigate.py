"""Remedies (issue 13), fast known answers: the debiasing projection and its fold into CLIP's weights,
the fairness-aware WiSE-FT chooser, paired variant-minus-candidate differences and their sentences.

The projection's known answer uses embeddings built here, so the planted effect is exact: images
of the "dark" group carry a cue on one axis ``w``; after fine-tuning on captions where one phrase
came with dark-skinned images, that phrase's text loads on ``w`` too (it ranks dark images first).
Prompts that describe only the attribute ("a lesion on dark skin") differ along ``w``, so the
projection removes exactly that loading: the phrase's specific skew falls, with a paired
interval below 0, and class accuracy stays within a stated tolerance.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from workbench import schema
from workbench.audit import compute_audit
from workbench.audit.core import ModelEmbeddings
from workbench.audit.spec import load_audit_spec, parse_audit_spec
from workbench.embed import encode_texts
from workbench.mitigate import (
    AlphaOutcome,
    ComparedRow,
    calibrated_projection,
    choose_alpha,
    debias_prompts,
    fairness_verdicts,
    fold_text_projection,
    orthogonal_complement,
    project_embeddings,
    rows_of_checks,
    variant_differences,
)
from workbench.mitigate.__main__ import main as mitigate_main
from workbench.mitigate.compare import OVERALL_ACCURACY, model_points
from workbench.mitigate.projection import DEFAULT_CALIBRATION
from workbench.mitigate.projection import projection_objective
from workbench.models import load_clip, save_clip
from workbench.report.mitigation import OVERALL_ACCURACY_KEY, describe_row, remedy_sentence

REPO_AUDIT = "audits/derm_demo.yaml"

# ------------------------------------------------------------------------------ projection algebra


def test_orthogonal_complement_removes_the_attribute_span_and_is_a_projection():
    rng = np.random.default_rng(0)
    attr = rng.standard_normal((3, 10))
    p0 = orthogonal_complement(attr)
    np.testing.assert_allclose(p0 @ attr.T, 0.0, atol=1e-12)  # every attribute prompt maps to 0
    np.testing.assert_allclose(p0 @ p0, p0, atol=1e-12)  # idempotent
    np.testing.assert_allclose(p0, p0.T, atol=1e-12)  # orthogonal projection
    assert round(float(np.trace(p0))) == 7  # 10 dimensions minus the 3 the prompts span
    # A vector orthogonal to the prompts is left as it was.
    v = rng.standard_normal(10)
    v -= attr.T @ np.linalg.lstsq(attr.T, v, rcond=None)[0]
    np.testing.assert_allclose(p0 @ v, v, atol=1e-12)


def test_centred_sets_remove_only_the_directions_between_groups():
    # Three prompts "a lesion on {light, medium, dark} skin": a shared part s plus a group part.
    rng = np.random.default_rng(3)
    d = 12
    shared, g1, g2 = rng.standard_normal((3, d))
    attr = np.stack([shared + g1, shared - g1, shared + g2])
    p_paper = orthogonal_complement(attr)
    p_between = orthogonal_complement(attr, sets=[0, 0, 0])
    assert round(float(np.trace(p_paper))) == d - 3 and round(float(np.trace(p_between))) == d - 2
    # Differences between the groups go either way; the prompts' common part survives only centred.
    for a, b in ((0, 1), (0, 2), (1, 2)):
        np.testing.assert_allclose(p_between @ (attr[a] - attr[b]), 0.0, atol=1e-10)
    mean = attr.mean(axis=0)
    np.testing.assert_allclose(p_paper @ mean, 0.0, atol=1e-10)
    centred_mean = p_between @ mean
    np.testing.assert_allclose(centred_mean @ (attr[0] - attr[1]), 0.0, atol=1e-10)
    assert np.linalg.norm(centred_mean) > 0.5 * np.linalg.norm(mean)
    # Two sets (two attributes) are centred separately: the offset between the sets is kept.
    other = np.stack([-shared + g1 * 0.0 + rng.standard_normal(d) for _ in range(2)])
    both = orthogonal_complement(np.concatenate([attr, other]), sets=[0, 0, 0, 1, 1])
    assert round(float(np.trace(both))) == d - 3
    np.testing.assert_allclose(both @ (other[0] - other[1]), 0.0, atol=1e-10)
    with pytest.raises(ValueError, match="2 set numbers for 3 prompts"):
        orthogonal_complement(attr, sets=[0, 0])


def test_calibrated_projection_is_the_closed_form_minimiser_of_the_papers_objective():
    rng = np.random.default_rng(1)
    d = 8
    attr = rng.standard_normal((2, d))
    pairs = rng.standard_normal((5, 2, d))
    lam = 50.0
    p = calibrated_projection(attr, pairs, lam)
    p0 = orthogonal_complement(attr)
    # Stationarity: 2 (P - P0) + 2 lam P M = 0.
    diff = pairs[:, 0] - pairs[:, 1]
    m = diff.T @ diff / len(diff)
    np.testing.assert_allclose((p - p0) + lam * p @ m, 0.0, atol=1e-9)
    # A strictly convex objective: every perturbation costs more.
    best = projection_objective(p, p0, pairs, lam)
    for _ in range(20):
        assert projection_objective(p + 1e-3 * rng.standard_normal((d, d)), p0, pairs, lam) > best
    # The pairs end closer together than under the plain projection; lambda 0 is the plain projection.
    assert np.linalg.norm(diff @ p.T) < np.linalg.norm(diff @ p0.T)
    np.testing.assert_allclose(calibrated_projection(attr, pairs, 0.0), p0)
    np.testing.assert_allclose(calibrated_projection(attr, (), lam), p0)
    with pytest.raises(ValueError, match="--project-lambda"):
        calibrated_projection(attr, pairs, -1.0)


def test_folded_model_returns_the_projected_normalised_text_embeddings(tiny_clip, tmp_path):
    model, processor = tiny_clip
    texts = ["a lesion on dark skin", "a photo of a melanoma", "close-up of a nevus", "a harmless mole"]
    original = encode_texts(model, processor.tokenizer, texts).double().numpy()
    d = original.shape[1]
    rng = np.random.default_rng(2)
    projection = calibrated_projection(rng.standard_normal((2, d)), rng.standard_normal((4, 2, d)), 10.0)
    pixels = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        image_before = model.get_image_features(pixel_values=pixels)
    fold_text_projection(model, projection)
    save_clip(model, processor, tmp_path / "folded")
    loaded, loaded_processor = load_clip(str(tmp_path / "folded"))  # a plain CLIPModel, save_pretrained folder
    folded = encode_texts(loaded, loaded_processor.tokenizer, texts).double().numpy()
    expected = project_embeddings(original, projection)  # normalise(P @ normalise(original))
    np.testing.assert_allclose(folded, expected, atol=1e-5)
    with torch.no_grad():
        image_after = loaded.get_image_features(pixel_values=pixels)
    image_after = getattr(image_after, "pooler_output", image_after)
    image_before = getattr(image_before, "pooler_output", image_before)
    torch.testing.assert_close(image_after, image_before)  # the image tower is untouched
    assert loaded.logit_scale.item() == model.logit_scale.detach().item()


def test_debias_prompts_from_the_demo_audit():
    spec = load_audit_spec(REPO_AUDIT)
    prompts = debias_prompts(spec, class_labels=["melanoma", "nevus"])
    # skin_tone: the audit's group-prompt wording without the concept; sex: the paper's default wording.
    assert prompts.attribute_prompts == ("a lesion on light skin", "a lesion on medium skin", "a lesion on dark skin",
                                         "a photo of a female person", "a photo of a male person")
    assert prompts.prompt_sets == (prompts.attribute_prompts[:3], prompts.attribute_prompts[3:])
    assert prompts.set_index() == [0, 0, 0, 1, 1]
    # 3 concepts + 2 class labels, each with the 3 pairs of skin tones.
    assert len(prompts.pairs) == 5 * 3
    assert ("a malignant lesion on light skin", "a malignant lesion on dark skin") in prompts.pairs
    assert ("a melanoma lesion on medium skin", "a melanoma lesion on dark skin") in prompts.pairs
    only = debias_prompts(spec, ["sex"], templates=["a photo of {group} skin"])
    assert only.attribute_prompts == ("a photo of female skin", "a photo of male skin") and only.pairs == ()
    with pytest.raises(ValueError, match="--project-attributes age"):
        debias_prompts(spec, ["age"])
    with pytest.raises(ValueError, match="no '\\{group\\}'"):
        debias_prompts(spec, templates=["a photo"])


# ------------------------------------------------------------------------------ known answer: planted phrase

PLANTED = "a lesion that needs urgent referral"
UNRELATED = ("a benign lesion", "a skin lesion")
CONTROLS = tuple(f"simulated control {i:02d}" for i in range(20))
CLASSES = ("melanoma", "nevus")
GROUPS = ("light", "dark")
ATTRIBUTE_TEMPLATE = "a lesion on {group} skin"


def planted_phrase_audit(per_group: int = 300, seed: int = 0):
    """(spec, table, {role: embeddings}, projection) for the planted-phrase design above."""
    rng = np.random.default_rng(seed)
    n = per_group * len(GROUPS)
    table = pd.DataFrame({"row": np.arange(n), "label": rng.choice(CLASSES, n), "skin_tone": np.repeat(GROUPS, per_group)})
    skew_prompts = [PLANTED, *UNRELATED, *CONTROLS]
    # axes: classes | w (group cue) | v0 (shared by attribute prompts) | one per skew prompt | filler
    n_c, w, v0 = len(CLASSES), len(CLASSES), len(CLASSES) + 1
    first = n_c + 2
    dim = first + len(skew_prompts) + 1
    truth = np.array([CLASSES.index(c) for c in table["label"]])
    correct = rng.random(n) < 0.85
    pred = np.where(correct, truth, 1 - truth)
    image = np.zeros((n, dim))
    image[np.arange(n), pred] = 3.0
    dark = (table["skin_tone"] == "dark").to_numpy()
    image[:, w] = dark * 1.0
    image[:, first:first + len(skew_prompts)] = rng.standard_normal((n, len(skew_prompts)))
    norms = np.linalg.norm(image, axis=1)
    image[:, -1] = np.sqrt(norms.max() ** 2 + 1.0 - norms ** 2)  # every image the same norm
    image /= np.linalg.norm(image, axis=1, keepdims=True)

    def unit(v):
        return v / np.linalg.norm(v)

    def axis(i, scale=1.0):
        v = np.zeros(dim)
        v[i] = scale
        return v

    def text(planted_loading: float) -> dict[str, np.ndarray]:
        out = {f"a photo of {c}": unit(axis(i) + axis(w, 0.05)) for i, c in enumerate(CLASSES)}
        for j, p in enumerate(skew_prompts):
            out[p] = unit(axis(first + j) + (axis(w, planted_loading) if p == PLANTED else 0))
        return out

    spec = parse_audit_spec({
        "name": "planted_phrase",
        "attributes": [{"column": "skin_tone", "groups": list(GROUPS), "reference": "light"}],
        "classes": {"labels": list(CLASSES), "templates": ["a photo of {}"]},
        "skew": {"prompts": [PLANTED, *UNRELATED], "k": [100], "controls": list(CONTROLS)},
        "policy": {"checks": [{"name": "concept", "metric": "specific_max_skew", "attribute": "skin_tone", "k": 100,
                               "target": "uniform", "warn": 0.2, "fail": 0.4}]},
        "bootstrap": {"n_boot": 400, "seed": 0},
    }, "planted.yaml")
    tuned_text = text(1.5)
    # The projection from the tuned model's own text embeddings of the attribute-only prompts and of
    # pairs that differ only in the group term (here: along w, around a shared lesion direction).
    attribute_text = np.stack([unit(axis(v0) + axis(w, -1.0)), unit(axis(v0) + axis(w, 1.0))])
    pairs = np.stack([[unit(axis(v0) + axis(first + j) - axis(w)), unit(axis(v0) + axis(first + j) + axis(w))]
                      for j in range(3)])
    projection = calibrated_projection(attribute_text, pairs, DEFAULT_CALIBRATION, sets=[0, 0])  # the defaults
    prompts = list(tuned_text)
    projected = dict(zip(prompts, project_embeddings(np.stack([tuned_text[p] for p in prompts]), projection)))
    embeddings = {
        "base": ModelEmbeddings(image=image.astype(np.float32), text=text(0.0), model="base"),
        "tuned": ModelEmbeddings(image=image.astype(np.float32), text=tuned_text, model="tuned"),
        "project": ModelEmbeddings(image=image.astype(np.float32), text=projected, model="project"),
    }
    return spec, table, embeddings


def test_projection_removes_a_planted_phrase_skew_with_an_interval_below_zero_and_keeps_accuracy():
    spec, table, embeddings = planted_phrase_audit()
    result = compute_audit(spec, table, embeddings, candidate="tuned", reference="base")
    specific = ComparedRow("specific_skew", "abs_higher_is_worse", attribute="skin_tone", group="dark", prompt=PLANTED,
                           k=100, target="uniform", what="specific skew of the planted phrase")
    rows = [specific, OVERALL_ACCURACY]
    diffs = {d["key"]: d for d in variant_differences(result.results, result.replicates, candidate="tuned",
                                                      variants=["project"], rows=rows)}
    skew = diffs[specific.key]
    # The fine-tuned model puts dark images on top for the phrase (log-ratio well above 0) ...
    assert skew["candidate_value"] > 0.4
    # ... the projection brings it back to the controls' baseline (its own interval covers 0), significantly lower.
    assert skew["variant_ci_low"] < 0 < skew["variant_ci_high"]
    assert skew["difference"] < -0.3 and skew["ci_high"] < 0 and skew["significant"] and skew["change"] == "better"
    # Stated tolerance: class accuracy within 2 points, its paired interval within 3 points of 0.
    acc = diffs[OVERALL_ACCURACY_KEY]
    assert abs(acc["difference"]) <= 0.02 and acc["ci_low"] >= -0.03 and acc["ci_high"] <= 0.03
    # The same rows straight from the policy's check entries: the concept check selects the phrase's MaxSkew.
    checked = rows_of_checks(result.summary["checks"])
    assert [r.metric for r in checked] == ["specific_max_skew"] * 3 + ["accuracy"]
    by_prompt = {d["prompt"]: d for d in variant_differences(result.results, result.replicates, candidate="tuned",
                                                             variants=["project"], rows=checked) if d["prompt"]}
    assert by_prompt[PLANTED]["ci_high"] < 0 and not by_prompt[UNRELATED[0]]["significant"]
    points = model_points(result.results, ["base", "tuned", "project"], checked)
    assert {p["role"] for p in points} == {"base", "tuned", "project"} and len(points) == 3 * 4


# ------------------------------------------------------------------------------ paired differences by hand


def test_variant_differences_are_paired_percentiles_of_replicate_differences():
    rows = []
    reps = {}
    base = np.linspace(0.0, 1.0, 101)
    for role, shift in (("tuned", 0.0), ("balance", 0.25), ("same", 0.0)):
        row = {"model": role, "audit": "a", "metric": "accuracy_gap", "attribute": "skin_tone", "group": "",
               "label": "", "prompt": "", "k": 0, "target": "", "value": 0.12 - shift, "ci_low": 0.0, "ci_high": 0.2,
               "n": 600, "status": "ok", "note": ""}
        rows.append(row)
        # Same resamples: the variant's replicates are the candidate's minus a shift, plus a small wobble.
        reps[tuple(row[c] for c in ("model", "metric", "attribute", "group", "label", "prompt", "k", "target"))] = (
            base - shift + (0.01 * np.sin(np.arange(101)) if role == "balance" else 0.0))
    results = pd.DataFrame(rows, columns=list(schema.RESULT_COLUMNS))
    gap = ComparedRow("accuracy_gap", "higher_is_worse", attribute="skin_tone", what="the gap")
    out = variant_differences(results, reps, candidate="tuned", variants=["balance", "same"], rows=[gap], level=0.9)
    wobble = -0.25 + 0.01 * np.sin(np.arange(101))
    assert out[0]["difference"] == pytest.approx(-0.25)
    assert out[0]["ci_low"] == pytest.approx(np.quantile(wobble, 0.05))
    assert out[0]["ci_high"] == pytest.approx(np.quantile(wobble, 0.95))
    assert out[0]["significant"] and out[0]["change"] == "better"
    # Identical replicates: a zero-width interval at 0, not significant.
    assert out[1]["difference"] == 0 and out[1]["ci_low"] == out[1]["ci_high"] == 0 and not out[1]["significant"]
    assert out[1]["change"] == "none"


def test_seed_differences_add_the_run_to_run_variance_by_hand():
    """Two runs per side, scored on the same resamples: the interval's variance is the paired bootstrap
    variance of the two means' difference plus each side's between-run variance over its run count."""
    from scipy import stats

    from workbench.mitigate.compare import seed_differences

    rng = np.random.default_rng(4)
    noise = rng.standard_normal(400) * 0.02  # the images' resampling noise, shared by every model
    values = {"tuned": 0.20, "tuned_seed1": 0.16, "balance": 0.10, "balance_seed1": 0.12}
    own = {"tuned": 0.0, "tuned_seed1": 0.001, "balance": -0.002, "balance_seed1": 0.0}
    rows, reps = [], {}
    for role, value in values.items():
        row = {"model": role, "audit": "a", "metric": "accuracy_gap", "attribute": "skin_tone", "group": "",
               "label": "", "prompt": "", "k": 0, "target": "", "value": value, "ci_low": 0.0, "ci_high": 0.3,
               "n": 600, "status": "ok", "note": ""}
        rows.append(row)
        reps[tuple(row[c] for c in ("model", "metric", "attribute", "group", "label", "prompt", "k", "target"))] = (
            value + noise + own[role] * np.cos(np.arange(400)))
    results = pd.DataFrame(rows, columns=list(schema.RESULT_COLUMNS))
    gap = ComparedRow("accuracy_gap", "higher_is_worse", attribute="skin_tone", what="the gap")
    (out,) = seed_differences(results, reps, variant="balance", candidate_roles=["tuned", "tuned_seed1"],
                              variant_roles=["balance", "balance_seed1"], rows=[gap], level=0.95)
    # Means 0.18 and 0.11; between-run variances 0.04^2/2 and 0.02^2/2 (sample variances of two values), each over 2 runs.
    assert out["candidate_value"] == pytest.approx(0.18) and out["variant_value"] == pytest.approx(0.11)
    assert out["difference"] == pytest.approx(-0.07)
    paired = np.var((reps[("balance",) + ("accuracy_gap", "skin_tone", "", "", "", 0, "")]
                     + reps[("balance_seed1",) + ("accuracy_gap", "skin_tone", "", "", "", 0, "")]) / 2
                    - (reps[("tuned",) + ("accuracy_gap", "skin_tone", "", "", "", 0, "")]
                       + reps[("tuned_seed1",) + ("accuracy_gap", "skin_tone", "", "", "", 0, "")]) / 2, ddof=1)
    se = np.sqrt(paired + (0.04 ** 2 / 2) / 2 + (0.02 ** 2 / 2) / 2)
    t = stats.t.ppf(0.975, 2)
    assert out["ci_low"] == pytest.approx(-0.07 - t * se) and out["ci_high"] == pytest.approx(-0.07 + t * se)
    # The runs' spread dominates: the paired-only interval would exclude 0, this one does not.
    assert paired < 1e-5 and out["ci_high"] > 0 and not out["significant"] and out["change"] == "none"
    assert out["training_sd_candidate"] == pytest.approx(0.04 / np.sqrt(2))
    with pytest.raises(ValueError, match="at least 2 training runs"):
        seed_differences(results, reps, variant="balance", candidate_roles=["tuned"], variant_roles=["balance"],
                         rows=[gap])


# ------------------------------------------------------------------------------ sentences


def _diff(metric, what, cand, var, low, high, *, change="better", percent=True, key="k"):
    return {"metric": metric, "what": what, "candidate_value": cand, "variant_value": var, "difference": var - cand,
            "ci_low": low, "ci_high": high, "significant": low > 0 or high < 0, "change": change,
            "percent": percent, "key": key}


def test_remedy_sentence_names_the_closed_gap_and_the_cost_in_accuracy():
    what = describe_row("accuracy_gap", attribute="skin_tone", worse_group="dark", better_group="light")
    assert what == "the dark-vs-light accuracy gap (skin_tone)"
    gap = _diff("accuracy_gap", what, 0.12, 0.03, -0.13, -0.05)
    overall = _diff("accuracy", "overall accuracy", 0.90, 0.889, -0.020, -0.003, change="worse", key=OVERALL_ACCURACY_KEY)
    assert remedy_sentence("balanced fine-tuning", [gap], overall) == (
        "balanced fine-tuning closed the dark-vs-light accuracy gap (skin_tone) from 12.0 to 3.0 points "
        "(difference -9.0, CI -13.0 to -5.0) at a cost of 1.1 points overall accuracy (CI -2.0 to -0.3)")
    flat = _diff("accuracy_gap", what, 0.12, 0.11, -0.04, 0.02, change="none")
    same = _diff("accuracy", "overall accuracy", 0.90, 0.90, -0.01, 0.01, change="none")
    assert remedy_sentence("the debiasing projection", [flat], same) == "the debiasing projection: no significant change"
    skew = _diff("specific_max_skew", describe_row("specific_max_skew", attribute="sex", prompt="a dangerous lesion", k=100),
                 0.45, 0.10, -0.50, -0.20, percent=False)
    assert remedy_sentence("the debiasing projection", [skew], same) == (
        "the debiasing projection lowered the specific MaxSkew@100 of 'a dangerous lesion' (sex) from 0.450 to 0.100 "
        "(difference -0.350, CI -0.500 to -0.200) with no significant change in overall accuracy "
        "(difference +0.0, CI -1.0 to +1.0)")


# ------------------------------------------------------------------------------ the interpolation chooser


def _outcome(alpha, accuracy, *verdicts):
    return AlphaOutcome(alpha, accuracy, {f"check{i}": v for i, v in enumerate(verdicts)})


def test_chooser_picks_the_most_accurate_alpha_whose_fairness_checks_all_pass():
    sweep = [_outcome(0.0, 0.40, "pass", "pass"), _outcome(0.3, 0.80, "pass", "pass"), _outcome(0.5, 0.86, "pass", "pass"),
             _outcome(0.7, 0.91, "fail", "pass"), _outcome(1.0, 0.95, "pass", "warn")]
    choice = choose_alpha(list(reversed(sweep)))
    assert choice.alpha == 0.5 and choice.accuracy == 0.86
    assert [o.alpha for o in choice.sweep] == [0.0, 0.3, 0.5, 0.7, 1.0]
    assert "alpha 0.5" in choice.sentence and "3 of 5 weights pass" in choice.sentence
    # An inconclusive check does not pass either; ties go to the smaller alpha (closer to the base).
    tie = choose_alpha([_outcome(0.2, 0.8, "pass"), _outcome(0.4, 0.8, "pass"), _outcome(0.6, 0.9, "inconclusive")])
    assert tie.alpha == 0.2
    assert choose_alpha([_outcome(0.5, 0.9, "pass")]).to_dict()["sweep"][0]["passes"] is True


def test_chooser_says_when_no_weight_qualifies_and_returns_no_model():
    choice = choose_alpha([_outcome(0.0, 0.4, "inconclusive"), _outcome(0.5, 0.8, "fail"), _outcome(1.0, 0.9, "warn", "fail")])
    assert choice.alpha is None and choice.accuracy is None
    assert choice.sentence.startswith("no WiSE-FT weight passes the fairness checks on validation")
    # The closest weight speaks for the sweep: fewest rows not passing, then the more accurate.
    assert "(closest of 3: alpha 0.5, 1 of 1 rows not passing: check0)" in choice.sentence
    assert choice.sentence.endswith("no model written")
    with pytest.raises(ValueError, match="--wise-alpha"):
        choose_alpha([])


def test_fairness_verdicts_leave_out_the_domain_check_and_name_rows():
    checks = [{"name": "gap", "kind": "absolute", "verdict": "pass", "group": "", "prompt": ""},
              {"name": "concept", "kind": "absolute", "verdict": "fail", "group": "dark", "prompt": "a bad lesion"},
              {"name": "domain_accuracy_gain", "kind": "domain", "verdict": "fail"}]
    assert fairness_verdicts(checks) == {"gap": "pass", "concept (dark, a bad lesion)": "fail"}


# ------------------------------------------------------------------------------ command line


def test_command_line_refuses_bad_input_in_one_line_before_any_work(tmp_path, capsys):
    assert mitigate_main([str(tmp_path / "nowhere"), "--remedy", "project"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a run folder" in err[0]


def _fake_run(tmp_path, **config):
    """A run folder as a recipe writes it, without weights: enough for every check made before work."""
    import dataclasses
    import json

    from workbench.train import FinetuneConfig

    run = tmp_path / "run"
    (run / schema.RUN_MODEL_DIR).mkdir(parents=True)
    values = dataclasses.asdict(FinetuneConfig(model="workbench/demo-clip", dataset="workbench/demo-derm",
                                               group_columns=["skin_tone", "sex"], audit=REPO_AUDIT, **config))
    (run / schema.RUN_CONFIG_FILE).write_text(json.dumps({"recipe": "medical", "config": values}))
    (run / schema.RUN_BASE_FILE).write_text(json.dumps({"model": "workbench/demo-clip", "revision": None}))
    return run


@pytest.mark.parametrize(("flags", "message"), [
    (["--remedy", "balance", "--balance-groups", "age"], "--balance-groups age: not a group column of the run or its audit"),
    (["--remedy", "align", "--align-attributes", "skin"], "--align-attributes skin: not a group column"),
    (["--remedy", "project", "--project-attributes", "age"], "--project-attributes age: not an attribute of audit"),
    (["--remedy", "wise", "--wise-alpha", "1.5"], "--wise-alpha values must lie in [0, 1]"),
    (["--remedy", "project", "--project-lambda", "-1"], "--project-lambda must be at least 0"),
    (["--remedy", "balance", "--seeds", "0"], "--seeds must be a whole number >= 1"),
])
def test_bad_remedy_flags_are_one_line_errors_before_any_model_loads(tmp_path, capsys, flags, message):
    run = _fake_run(tmp_path)
    assert mitigate_main([str(run), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_the_typed_command_ends_with_the_one_line_error(tmp_path):
    """What the user sees last from ``python -m workbench.mitigate`` with a bad flag: the error, exit status 2."""
    import subprocess
    import sys

    run = _fake_run(tmp_path)
    done = subprocess.run([sys.executable, "-m", "workbench.mitigate", str(run), "--remedy", "balance", "--seeds", "0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == "error: --seeds must be a whole number >= 1, got 0"


def test_a_base_pinned_to_a_hub_commit_is_audited_at_that_commit(tmp_path, monkeypatch):
    import json

    import workbench.mitigate.run as mitigate_run
    from workbench.audit.runner import resolve_model_roles

    run = _fake_run(tmp_path)
    commit = "0123456789abcdef0123456789abcdef01234567"
    (run / schema.RUN_BASE_FILE).write_text(json.dumps({"model": "openai/clip-vit-base-patch32", "revision": "main",
                                                        "commit": commit}))
    seen = {}

    def joint_audit(spec, models, data, **kwargs):
        seen.update(models)
        raise RuntimeError("stop before loading")

    monkeypatch.setattr(mitigate_run, "run_audit", joint_audit)
    setup = mitigate_run.read_run_setup(run)
    mitigate_run.check_remedies(["project"], setup, mitigate_run.RemedySettings())  # no longer refused
    with pytest.raises(RuntimeError, match="stop before loading"):
        mitigate_run.audit_variants(setup, {})
    roles = resolve_model_roles(seen)
    assert roles["base"] == {"model": "openai/clip-vit-base-patch32", "revision": commit}
    assert roles["tuned"] == {"model": str(run / schema.RUN_MODEL_DIR), "revision": None}


def test_wise_needs_a_validation_split_and_a_variant_is_not_a_run_to_mitigate(tmp_path, capsys):
    run = _fake_run(tmp_path, validation_split="")
    assert mitigate_main([str(run), "--remedy", "wise"]) == 2
    assert "no validation split" in capsys.readouterr().err
    import json

    saved = json.loads((run / schema.RUN_CONFIG_FILE).read_text())
    saved["mitigation"] = {"remedy": "project"}
    (run / schema.RUN_CONFIG_FILE).write_text(json.dumps(saved))
    assert mitigate_main([str(run), "--remedy", "project"]) == 2
    assert "is itself a variant (project); pass the run folder it was made from" in capsys.readouterr().err


def test_a_long_sentence_names_the_two_largest_changes_and_counts_the_rest():
    rows = [_diff("specific_max_skew", f"skew {i}", 0.5, 0.5 - 0.1 * i, -0.1 * i - 0.05, -0.1 * i + 0.05 - 0.01 * i,
                  percent=False) for i in range(1, 5)]
    text = remedy_sentence("the debiasing projection", rows, None)
    assert text.startswith("the debiasing projection lowered skew 4 from 0.500 to 0.100")
    assert "and lowered skew 3 from" in text and "skew 2" not in text
    assert text.endswith("(and 2 more such changes, see the table)")


def test_a_signed_group_difference_is_worded_as_the_size_of_the_gap():
    what = describe_row("accuracy_difference", attribute="skin_tone", worse_group="dark", better_group="light")
    row = _diff("accuracy_difference", what, -0.308, -0.127, 0.134, 0.226)
    assert remedy_sentence("balanced fine-tuning", [row], None) == (
        "balanced fine-tuning closed the dark-vs-light accuracy gap (skin_tone) from 30.8 to 12.7 points "
        "(difference -18.1, CI -22.6 to -13.4)")

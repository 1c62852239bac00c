"""``python -m workbench.mitigate`` end to end (slow: real fine-tuning in this process).

1. On a tiny run (tiny CLIP, small demo-like data): every remedy makes an ordinary run folder
   under <run>/variants/, base, candidate and variants are audited together on the candidate
   audit's resamples, and the summary's differences are exactly variant minus candidate of the
   joint results, with each variant's own gate beside it.
2. Known answer on the demo base CLIP: prevalence planted per group in the training pairs (dark
   skin mostly melanoma) opens an accuracy gap; balanced fine-tuning (group x label cells)
   reduces it, with a paired interval below 0.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import datasets
import pandas as pd
import pytest
import torch
from train_fixtures import derm_dir, tiny_model_dir  # noqa: F401

from workbench import schema
from workbench.demo.derm import DermBias, generate_derm
from workbench.mitigate import RemedySettings, mitigate
from workbench.models import DEMO_MODEL, load_clip
from workbench.pipeline import audit_run
from workbench.report.mitigation import MITIGATION_CSV, MITIGATION_DIR, MITIGATION_SUMMARY, OVERALL_ACCURACY_KEY
from workbench.train import FinetuneConfig, finetune

pytestmark = pytest.mark.slow

TINY_AUDIT = """
name: tiny_mitigation
attributes:
  - column: skin_tone
    groups: [light, medium, dark]
    reference: light
  - column: sex
    groups: [female, male]
    reference: female
min_group_size: 2
classes:
  labels: [melanoma, nevus, basal cell carcinoma, seborrheic keratosis]
  templates: ["a photo of {}"]
skew:
  prompts: ["a dangerous lesion", "a harmless mole"]
  k: [8]
  controls: ["a close-up photo", "a clinical photograph", "a red square", "a blue circle", "a photo of grass"]
group_prompts:
  - attribute: skin_tone
    template: "a {concept} lesion on {group} skin"
    concepts: [malignant, benign]
policy:
  checks:
    - {name: gap_skin_tone, metric: accuracy_gap, attribute: skin_tone, warn: 0.05, fail: 0.10}
    - {name: concept_sex, metric: specific_max_skew, attribute: sex, k: 8, target: uniform, warn: 0.2, fail: 0.4}
bootstrap:
  n_boot: 60
  seed: 3
  n_perm: 50
"""


@pytest.fixture
def clean_process_state():
    """In-process fine-tuning builds accelerate's process-wide state and sets torch's thread count; undo both."""
    from accelerate.state import AcceleratorState

    threads = torch.get_num_threads()
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    torch.set_num_threads(threads)


def _train_and_audit(config: FinetuneConfig) -> Path:
    run_dir = finetune(config, recipe="medical")
    audit_run(run_dir, config)
    return run_dir


def test_every_remedy_makes_a_run_folder_audited_beside_the_candidate(tiny_model_dir, derm_dir, tmp_path,
                                                                     clean_process_state):
    audit_file = tmp_path / "tiny.yaml"
    audit_file.write_text(TINY_AUDIT)
    config = FinetuneConfig(model=str(tiny_model_dir), dataset=str(derm_dir), label_column="label",
                            group_columns=["skin_tone", "sex"], output_dir=str(tmp_path / "run"), per_device_batch_size=16,
                            eval_batch_size=64, warmup_steps=2, epochs=1, learning_rate=1e-3, eval_steps=0,
                            checkpoint_steps=0, audit=str(audit_file), cpu=True)
    run_dir = _train_and_audit(config)
    settings = RemedySettings(balance_by_label=True, align_weight=0.2, wise_alphas=(0.5, 1.0), project_calibration=10.0)
    summary = mitigate(run_dir, ["balance", "align", "project", "wise"], settings, progress=False, say=lambda s: None)

    variants = {v["remedy"]: v for v in summary["variants"]}
    assert list(variants) == ["balance", "align", "project", "wise"]
    made = [r for r, v in variants.items() if v["status"] == "ok"]
    assert {"balance", "align", "project"} <= set(made)
    for remedy in made:
        folder = run_dir / MITIGATION_DIR / remedy
        saved = json.loads((folder / schema.RUN_CONFIG_FILE).read_text())
        assert saved["mitigation"]["remedy"] == remedy and saved["mitigation"]["from_run"] == str(run_dir)
        assert json.loads((folder / schema.RUN_BASE_FILE).read_text())["model"] == str(tiny_model_dir)
        load_clip(str(folder))  # an ordinary run folder, loadable wherever a model id is
        # The variant's own release gate: the variant judged against the same base.
        gate = json.loads((folder / schema.RUN_AUDIT_DIR / "tiny_mitigation" / schema.SUMMARY_FILE).read_text())
        assert gate["models"]["tuned"]["model"] == str(folder / schema.RUN_MODEL_DIR)
        assert gate["verdict"] == variants[remedy]["verdict"]
        assert gate["bootstrap"]["n_boot"] == 60 and gate["bootstrap"]["seed"] == 3
    balance = json.loads((run_dir / MITIGATION_DIR / "balance" / schema.RUN_CONFIG_FILE).read_text())["config"]
    assert balance["balance_groups"] == ["skin_tone", "sex"] and balance["balance_by_label"] is True
    assert balance["epochs"] == 1 and balance["learning_rate"] == 1e-3  # the run's recipe configuration, re-run
    align = json.loads((run_dir / MITIGATION_DIR / "align" / schema.RUN_CONFIG_FILE).read_text())["config"]
    assert align["align_weight"] == 0.2 and align["align_attributes"] == ["skin_tone", "sex"]
    assert variants["wise"]["details"]["validation_split"] == "validation"
    assert [s["alpha"] for s in variants["wise"]["details"]["sweep"]] == [0.5, 1.0]

    # The projection changed the text projection only.
    tuned, _ = load_clip(str(run_dir))
    projected, _ = load_clip(str(run_dir / MITIGATION_DIR / "project"))
    changed = [k for k, v in projected.state_dict().items() if not torch.equal(v, tuned.state_dict()[k])]
    assert changed == ["text_projection.weight"]

    # One joint audit, on the candidate audit's resamples, holds every model; each difference is
    # exactly variant minus candidate of its rows.
    joint = run_dir / MITIGATION_DIR / "audit" / "tiny_mitigation"
    joint_summary = json.loads((joint / schema.SUMMARY_FILE).read_text())
    assert set(joint_summary["models"]) == {"base", "tuned", *made}
    assert joint_summary["candidate"] == "tuned" and joint_summary["reference"] == "base"
    candidate = json.loads((run_dir / schema.RUN_AUDIT_DIR / "tiny_mitigation" / schema.SUMMARY_FILE).read_text())
    assert joint_summary["bootstrap"] == candidate["bootstrap"]
    results = pd.read_parquet(joint / schema.RESULTS_FILE)
    overall = results[(results["metric"] == "accuracy") & (results["group"] == schema.OVERALL) & (results["label"] == "")]
    overall = overall.set_index("model")["value"]
    # The candidate's rows in the joint audit are the candidate audit's own rows (same data, same resamples).
    alone = pd.read_parquet(run_dir / schema.RUN_AUDIT_DIR / "tiny_mitigation" / schema.RESULTS_FILE)
    alone_overall = alone[(alone["metric"] == "accuracy") & (alone["group"] == schema.OVERALL) & (alone["label"] == "")]
    assert alone_overall.set_index("model").loc["tuned", ["value", "ci_low", "ci_high"]].tolist() == \
        results[(results["metric"] == "accuracy") & (results["group"] == schema.OVERALL) & (results["label"] == "")
                & (results["model"] == "tuned")][["value", "ci_low", "ci_high"]].iloc[0].tolist()
    accuracy_diffs = [d for d in summary["differences"] if d["key"] == OVERALL_ACCURACY_KEY]
    assert {d["variant"] for d in accuracy_diffs} == set(made)
    for d in accuracy_diffs:
        assert d["difference"] == pytest.approx(overall[d["variant"]] - overall["tuned"])
        assert d["ci_low"] <= d["difference"] <= d["ci_high"] or math.isclose(d["ci_low"], d["ci_high"])
        assert d["significant"] == (d["ci_low"] > 0 or d["ci_high"] < 0)
    assert {p["role"] for p in summary["points"]} == {"base", "tuned", *made}
    for remedy in made:
        assert variants[remedy]["sentence"].startswith(variants[remedy]["label"])
    table = pd.read_csv(run_dir / MITIGATION_DIR / MITIGATION_CSV)
    assert len(table) == len(summary["differences"])
    on_disk = json.loads((run_dir / MITIGATION_DIR / MITIGATION_SUMMARY).read_text())
    assert on_disk["differences"] == json.loads(json.dumps(summary["differences"]))


# ------------------------------------------------------------------------------ known answer: planted prevalence


TEMPLATES = ["a dermoscopy image of {}.", "a clinical photo of {}.", "a skin lesion: {}."]
# The audits of the known-answer runs: skin tone and the four classes, then their own checks.
SKIN_TONE_AND_CLASSES = f"""
attributes:
  - {{column: skin_tone, groups: [light, medium, dark], reference: light}}
classes:
  labels: [melanoma, nevus, basal cell carcinoma, seborrheic keratosis]
  templates: {json.dumps(TEMPLATES)}
"""
GAP_CHECK = "    - {name: gap_dark, metric: accuracy_difference, attribute: skin_tone, group: dark, warn: -0.05, fail: -0.10}\n"


def _train_demo_candidate(tmp_path: Path, data: Path, audit_text: str) -> Path:
    """The demo base fine-tuned (frozen image tower, 3 epochs) on ``data`` and audited with ``audit_text``."""
    audit_file = tmp_path / "audit.yaml"
    audit_file.write_text(audit_text)
    config = FinetuneConfig(model=DEMO_MODEL, dataset=str(data), label_column="label", group_columns=["skin_tone"],
                            output_dir=str(tmp_path / "run"), strategy="frozen-image", learning_rate=5e-4, epochs=3,
                            per_device_batch_size=64, eval_steps=0, checkpoint_steps=0, audit=str(audit_file), cpu=True,
                            templates=TEMPLATES)
    return _train_and_audit(config)


def _prevalence_data(folder: Path) -> Path:
    """Training pairs: dark skin mostly melanoma; validation and test: every class equally likely on every tone.

    Lesions on dark skin are faint (contrast 0.35, all splits), so the skin tone is the easier cue
    there: trained on the planted prevalence, the model leans to melanoma on dark skin.
    """
    contrast = {"light": 1.0, "medium": 1.0, "dark": 0.35}
    planted = DermBias(contrast=contrast, prevalence={"dark": {"melanoma": 0.85, "nevus": 0.05,
                                                               "basal cell carcinoma": 0.05, "seborrheic keratosis": 0.05}})
    train = generate_derm({"train": 1200}, seed=11, bias=planted)["train"]
    held_out = generate_derm({"validation": 300, "test": 900}, seed=12, bias=DermBias(contrast=contrast))
    datasets.DatasetDict({"train": train, **held_out}).save_to_disk(str(folder))
    return folder


def test_balanced_finetuning_reduces_a_planted_prevalence_gap(tmp_path, clean_process_state):
    data = _prevalence_data(tmp_path / "prevalence")
    run_dir = _train_demo_candidate(tmp_path, data, f"name: prevalence_gap\n{SKIN_TONE_AND_CLASSES}policy:\n  checks:\n"
                                                    f"{GAP_CHECK}bootstrap: {{n_boot: 400, seed: 0}}\n")
    summary = mitigate(run_dir, ["balance"], RemedySettings(balance_groups=("skin_tone",), balance_by_label=True),
                       progress=False, say=lambda s: None)
    (gap,) = [d for d in summary["differences"] if d["metric"] == "accuracy_difference"]
    print(json.dumps({k: gap[k] for k in ("candidate_value", "variant_value", "difference", "ci_low", "ci_high")}))
    # The candidate learned the shortcut: dark skin's accuracy well below light's ...
    assert gap["candidate_value"] < -0.15
    # ... balanced fine-tuning narrows it (the difference moves towards 0), with a paired interval excluding 0.
    # (Measured with reweighting, the default: -30.8 -> -7.2 points, difference +23.6, CI +18.1 to +29.4, on 900
    # test images; resampling: -30.8 -> -12.7, CI of the change +13.4 to +22.6.)
    assert gap["difference"] > 0.08 and gap["ci_low"] > 0 and gap["change"] == "better"
    (balance,) = summary["variants"]
    assert balance["sentence"].startswith("balanced fine-tuning closed the dark-vs-light accuracy gap (skin_tone) from")


# ------------------------------------------------------------------------------ known answer: planted caption phrase
# and balancing data that has no imbalance (one candidate serves both)

PHRASE = "a suspicious skin lesion"
PHRASE_AUDIT = f"""name: phrase_and_balance
{SKIN_TONE_AND_CLASSES}skew:
  prompts: ["a suspicious skin lesion", "a close-up of a skin lesion"]
  k: [100]
group_prompts:
  - attribute: skin_tone
    template: "a {{concept}} lesion on {{group}} skin"
    concepts: [malignant, benign]
policy:
  checks:
{GAP_CHECK}    - {{name: phrase, metric: specific_max_skew, attribute: skin_tone, k: 100, target: uniform, warn: 0.2, fail: 0.4}}
bootstrap: {{n_boot: 400, seed: 0}}
"""


def _phrase_data(folder: Path) -> Path:
    """Training captions name the skin tone ("..., on dark skin") and dark skin's alone carry
    "suspicious"; skin tone and class are drawn independently, so the skin tone x class cells differ
    only by sampling noise (75 to 116 pairs; no imbalance to balance). Validation and test captions
    carry no planted words; lesions on dark skin are faint in every split.
    """
    contrast = {"light": 1.0, "medium": 1.0, "dark": 0.35}
    terms = {"light": "on light skin", "medium": "on medium skin", "dark": "on dark skin, suspicious"}
    train = generate_derm({"train": 1200}, seed=11, bias=DermBias(contrast=contrast, caption_terms=terms))["train"]
    held_out = generate_derm({"validation": 300, "test": 900}, seed=12, bias=DermBias(contrast=contrast))
    datasets.DatasetDict({"train": train, **held_out}).save_to_disk(str(folder))
    return folder


def test_projection_removes_a_planted_caption_phrase_and_balancing_balanced_data_changes_nothing(
        tmp_path, clean_process_state):
    data = _phrase_data(tmp_path / "phrase")
    cells = datasets.load_from_disk(str(data))["train"].to_pandas().groupby(["skin_tone", "label"]).size()
    assert (cells.min(), cells.max()) == (75, 116)
    run_dir = _train_demo_candidate(tmp_path, data, PHRASE_AUDIT)
    summary = mitigate(run_dir, ["balance", "project"],
                       RemedySettings(balance_groups=("skin_tone",), balance_by_label=True, seeds=3),
                       progress=False, say=lambda s: None)
    diffs = {(d["variant"], d["prompt"] or d["key"]): d for d in summary["differences"]}
    print(json.dumps({f"{v}|{k}": [round(d[x], 4) for x in ("candidate_value", "variant_value", "difference", "ci_low",
                                                             "ci_high")] for (v, k), d in diffs.items()}))

    # The projection: the fine-tuned model ranks dark skin first for the planted phrase ...
    phrase = diffs[("project", PHRASE)]
    assert phrase["metric"] == "specific_max_skew" and phrase["candidate_value"] > 2.0
    # ... and the projection of the skin-tone differences removes most of it, with a paired interval below 0.
    # (Measured: specific MaxSkew@100 3.77 -> 0.75, difference -3.03, CI -3.81 to -1.92, n=900.)
    assert phrase["difference"] < -2.0 and phrase["ci_high"] < 0 and phrase["change"] == "better"
    # Stated tolerance: overall accuracy within 5 points, its paired interval inside -7 to +7 points.
    # (Measured: -2.4 points, CI -5.2 to +0.1.)
    accuracy = diffs[("project", OVERALL_ACCURACY_KEY)]
    assert abs(accuracy["difference"]) <= 0.05 and accuracy["ci_low"] >= -0.07 and accuracy["ci_high"] <= 0.07

    # Balancing data without an imbalance (reweighting, the default): the means of 3 balanced runs against 3 runs
    # of the candidate's configuration change no checked metric significantly (run-to-run variation inside the
    # intervals). (Measured: overall accuracy -0.4 points, CI -2.7 to +1.8.)
    balance = {k: d for (v, k), d in diffs.items() if v == "balance"}
    assert len(balance) == 4 and all(d["training_runs_variant"] == d["training_runs_candidate"] == 3 for d in balance.values())
    assert not [d["what"] for d in balance.values() if d["significant"]]
    assert abs(balance[OVERALL_ACCURACY_KEY]["difference"]) < 0.03
    # Re-training alone moves overall accuracy (measured: sd 0.9 points over the candidate's 3 runs, which span
    # 1.6 points): the interval of one run per side would leave that out.
    assert balance[OVERALL_ACCURACY_KEY]["training_sd_candidate"] > 0.005
    (entry,) = [v for v in summary["variants"] if v["remedy"] == "balance"]
    assert entry["sentence"].startswith("balanced fine-tuning: no significant change")
    assert "means of 3 training runs each" in entry["sentence"] and entry["training_runs"] == 3
    assert summary["candidate_training_runs"] == 3
    folders = sorted(p.name for p in (run_dir / MITIGATION_DIR).iterdir() if p.is_dir())
    seed = FinetuneConfig.seed
    assert folders == sorted(["audit", "balance", f"balance-seed{seed + 1}", f"balance-seed{seed + 2}",
                              f"candidate-seed{seed + 1}", f"candidate-seed{seed + 2}", "project"])

"""Run folders with hand-chosen numbers, written exactly per workbench/schema.py.

The numbers are chosen so every view has something to show and the tests can assert
them by hand: a domain gain overall, a regression in the small "dark" group, a skew that
grows after fine-tuning for one prompt.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd

from workbench import schema
from workbench.io import atomic_write_json

AUDIT = "derm-fairness"
PROMPTS = ("a photo of a patient", "a close-up of skin", "a clinical photograph <b>")
CLASSES = ("melanoma", "nevus")

# (base value, base ci, tuned value, tuned ci, n, status) per skin_tone group.
ACCURACY = {
    "light": (0.70, (0.62, 0.78), 0.85, (0.79, 0.90), 120, "ok"),
    "medium": (0.65, (0.55, 0.74), 0.80, (0.72, 0.87), 90, "ok"),
    "dark": (0.60, (0.33, 0.83), 0.50, (0.25, 0.75), 12, "small_group"),
}
SEX_ACCURACY = {
    "female": (0.66, (0.58, 0.73), 0.82, (0.76, 0.88), 110, "ok"),
    "male": (0.68, (0.60, 0.75), 0.80, (0.73, 0.86), 112, "ok"),
}
OVERALL = (0.67, (0.61, 0.73), 0.81, (0.76, 0.86), 222)
DELTA_CI = {"light": (0.08, 0.22), "medium": (0.05, 0.25), "dark": (-0.35, 0.15),
            "female": (0.09, 0.23), "male": (0.05, 0.19), schema.OVERALL: (0.09, 0.19)}
MIN_GROUP_SIZE = 30


def _row(**kw) -> dict:
    row = {"model": "", "audit": AUDIT, "metric": "", "attribute": "", "group": "", "label": "", "prompt": "",
           "k": 0, "target": "", "value": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0,
           "status": "ok", "note": ""}
    row.update(kw)
    return row


def _accuracy_rows(roles: tuple[str, ...]) -> list[dict]:
    rows = []
    base, base_ci, tuned, tuned_ci, n = OVERALL
    values = {"base": (base, base_ci), "tuned": (tuned, tuned_ci),
              "delta": (round(tuned - base, 10), DELTA_CI[schema.OVERALL])}
    for role in roles:
        v, (lo, hi) = values[role]
        rows.append(_row(model=role, metric="accuracy", group=schema.OVERALL, value=v, ci_low=lo, ci_high=hi, n=n))
    for attribute, table in (("skin_tone", ACCURACY), ("sex", SEX_ACCURACY)):
        reference = max(table, key=lambda g: table[g][4])  # largest group is the audit's reference
        for group, (b, bci, t, tci, n, status) in table.items():
            note = f"n={n} below the minimum {MIN_GROUP_SIZE}" if status == "small_group" else ""
            values = {"base": (b, bci), "tuned": (t, tci), "delta": (round(t - b, 10), DELTA_CI[group])}
            for role in roles:
                v, (lo, hi) = values[role]
                rows.append(_row(model=role, metric="accuracy", attribute=attribute, group=group, value=v,
                                 ci_low=lo, ci_high=hi, n=n, status=status, note=note))
            for role in [r for r in roles if r != "delta"]:
                ref_v = table[reference][0 if role == "base" else 2]
                v = table[group][0 if role == "base" else 2]
                exact = group == reference
                rows.append(_row(model=role, metric="accuracy_difference", attribute=attribute, group=group,
                                 value=0.0 if exact else round(v - ref_v, 10),
                                 ci_low=0.0 if exact else round(v - ref_v - 0.1, 10),
                                 ci_high=0.0 if exact else round(v - ref_v + 0.1, 10), n=n, status=status, note=note))
                rows.append(_row(model=role, metric="accuracy_ratio", attribute=attribute, group=group,
                                 value=1.0 if exact else v / ref_v, ci_low=1.0 if exact else v / ref_v - 0.1,
                                 ci_high=1.0 if exact else v / ref_v + 0.1, n=n, status=status, note=note))
        for role in [r for r in roles if r != "delta"]:
            accs = [table[g][0 if role == "base" else 2] for g in table]
            rows.append(_row(model=role, metric="accuracy_gap", attribute=attribute, value=max(accs) - min(accs),
                             ci_low=0.0, ci_high=0.4, n=sum(t[4] for t in table.values())))
    # intersections: skin_tone*sex with one suppressed cell
    for i, (group, n) in enumerate((("light*female", 60), ("light*male", 60), ("medium*female", 45),
                                    ("medium*male", 45), ("dark*female", 5), ("dark*male", 7))):
        for role in [r for r in roles if r != "delta"]:
            v = 0.5 + 0.05 * i + (0.1 if role == "tuned" else 0.0)
            status = "small_group" if n < MIN_GROUP_SIZE else "ok"
            rows.append(_row(model=role, metric="accuracy", attribute="skin_tone*sex", group=group, value=v,
                             ci_low=v - 0.1, ci_high=v + 0.1, n=n, status=status))
    # per-class recall per skin tone group
    for role in [r for r in roles if r != "delta"]:
        for c, label in enumerate(CLASSES):
            for g, (group, spec) in enumerate(ACCURACY.items()):
                v = 0.9 - 0.1 * c - 0.05 * g + (0.05 if role == "tuned" else 0.0)
                rows.append(_row(model=role, metric="class_accuracy", attribute="skin_tone", group=group, label=label,
                                 value=round(v, 10), ci_low=v - 0.1, ci_high=v + 0.1, n=spec[4] // 2, status=spec[5]))
            rows.append(_row(model=role, metric="class_accuracy", group=schema.OVERALL, label=label,
                             value=0.8 - 0.1 * c, n=111))
            rows.append(_row(model=role, metric="demographic_parity_difference", attribute="skin_tone", label=label,
                             value=0.1 + 0.05 * c, ci_low=0.02, ci_high=0.2, n=222))
    return rows


def skew_value(role: str, p: int, g: int, k: int, target: str) -> float:
    """Hand-chosen Skew@k: grows with fine-tuning for prompt 0, group 0 (light)."""
    base = [[0.2, -0.1, -0.3], [0.0, 0.1, -0.2], [0.1, 0.0, -0.1]][p][g]
    tuned_extra = 0.3 if (p == 0 and g == 0) else 0.0
    scale = 1.0 if k == 10 else 0.5
    shift = 0.0 if target == "uniform" else 0.05
    return round((base + (tuned_extra if role == "tuned" else 0.0)) * scale + shift, 10)


def _skew_rows(roles: tuple[str, ...]) -> list[dict]:
    rows = []
    groups = list(ACCURACY)
    for k in (10, 50):
        for target in ("uniform", "data"):
            for role in [r for r in roles if r != "delta"]:
                maxes = []
                for p, prompt in enumerate(PROMPTS):
                    skews = [skew_value(role, p, g, k, target) for g in range(len(groups))]
                    for g, group in enumerate(groups):
                        rows.append(_row(model=role, metric="skew", attribute="skin_tone", group=group, prompt=prompt,
                                         k=k, target=target, value=skews[g], ci_low=skews[g] - 0.2,
                                         ci_high=skews[g] + 0.2, n=k))
                    maxes.append(max(skews))
                    rows.append(_row(model=role, metric="max_skew", attribute="skin_tone", prompt=prompt, k=k,
                                     target=target, value=max(skews), n=k))
                    rows.append(_row(model=role, metric="min_skew", attribute="skin_tone", prompt=prompt, k=k,
                                     target=target, value=min(skews), n=k))
                    rows.append(_row(model=role, metric="ndkl", attribute="skin_tone", prompt=prompt, k=k,
                                     target=target, value=round(0.01 * (p + 1), 10), n=k))
                mean = sum(maxes) / len(maxes)
                std = (sum((m - mean) ** 2 for m in maxes) / (len(maxes) - 1)) ** 0.5
                rows.append(_row(model=role, metric="max_skew_mean", attribute="skin_tone", prompt=schema.ALL_PROMPTS,
                                 k=k, target=target, value=mean, n=k))
                rows.append(_row(model=role, metric="max_skew_std", attribute="skin_tone", prompt=schema.ALL_PROMPTS,
                                 k=k, target=target, value=std, n=k))
    return rows


def _checks(compares: bool) -> list[dict]:
    checks = [
        {"name": "overall accuracy does not drop", "metric": "accuracy", "model": "delta", "attribute": "",
         "group": schema.OVERALL, "value": 0.14, "ci_low": 0.09, "ci_high": 0.19, "threshold": -0.02,
         "warn_threshold": 0.0, "direction": "lower_is_worse", "verdict": "pass", "reason": "interval above the threshold"},
        {"name": "skin tone accuracy gap", "metric": "accuracy_gap", "model": "tuned", "attribute": "skin_tone",
         "group": "", "value": 0.35, "ci_low": 0.1, "ci_high": 0.5, "threshold": 0.1, "warn_threshold": 0.05,
         "direction": "higher_is_worse", "verdict": "fail", "reason": "interval above the threshold"},
        {"name": "no group regresses", "metric": "accuracy", "model": "delta", "attribute": "skin_tone",
         "group": "dark", "value": -0.1, "ci_low": -0.35, "ci_high": 0.15, "threshold": -0.05,
         "warn_threshold": 0.0, "direction": "lower_is_worse", "verdict": "inconclusive",
         "reason": "group dark has n=12, below the minimum 30"},
    ]
    return checks if compares else checks[1:2]


def write_audit(folder: Path, *, roles: tuple[str, ...] = ("base", "tuned", "delta"), schema_version: int = 1) -> Path:
    """Write results.parquet/.csv, summary.json and rankings.parquet of one audit into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(_accuracy_rows(roles) + _skew_rows(roles), columns=list(schema.RESULT_COLUMNS))
    table.to_parquet(folder / schema.RESULTS_FILE, index=False)
    table.to_csv(folder / schema.RESULTS_CSV, index=False)
    compares = "tuned" in roles
    models = {"base": {"model": "workbench/demo-clip", "fingerprint": "f00d"}}
    if compares:
        models["tuned"] = {"model": "runs/derm-full/model", "fingerprint": "beef"}
    summary = {
        "schema_version": schema_version, "audit": AUDIT, "created": "2025-11-28T04:00:00+00:00",
        "models": models,
        "data": {"source": "workbench/demo-derm", "split": "test", "fingerprint": "d47a", "n": 222},
        "spec": {"name": AUDIT, "attributes": [{"column": "skin_tone", "groups": None, "reference": None},
                                               {"column": "sex", "groups": None, "reference": None}],
                 "intersections": [["skin_tone", "sex"]], "min_group_size": MIN_GROUP_SIZE,
                 "skew": {"prompts": list(PROMPTS), "k": [10, 50], "targets": ["uniform", "data"]},
                 "bootstrap": {"n_boot": 200, "seed": 7, "level": 0.95, "n_perm": 100}},
        "groups": {"skin_tone": {"groups": list(ACCURACY), "sizes": [v[4] for v in ACCURACY.values()],
                                 "reference": "light"},
                   "sex": {"groups": list(SEX_ACCURACY), "sizes": [v[4] for v in SEX_ACCURACY.values()],
                           "reference": "male"}},
        "k": [10, 50], "targets": ["uniform", "data"],
        "bootstrap": {"n_boot": 200, "seed": 7, "level": 0.95, "stratified_by": ["skin_tone", "sex"]},
        "checks": _checks(compares),
        "verdict": "fail",
        "not_computed": [{"metric": "weat_effect_size", "reason": "no concept prompts in the audit"}],
        "warnings": ["group dark has n=12, below the minimum 30"],
        "n_tests": 42,
    }
    atomic_write_json(folder / schema.SUMMARY_FILE, summary)
    rank_rows = []
    tones = list(ACCURACY)
    for role in [r for r in roles if r != "delta"]:
        for p, prompt in enumerate(PROMPTS):
            for rank in range(1, 13):
                row = (rank * 7 + p * 3 + (1 if role == "tuned" else 0)) % 40
                rank_rows.append({"model": role, "prompt": prompt, "rank": rank, "row": row,
                                  "score": round(0.5 - 0.01 * rank, 6), "skin_tone": tones[row % 3],
                                  "sex": ("female", "male")[row % 2]})
    pd.DataFrame(rank_rows).to_parquet(folder / schema.RANKINGS_FILE, index=False)
    return folder


def write_training_files(folder: Path) -> None:
    """What a recipe writes besides the model: config, base model, training log, zero-shot file."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / schema.RUN_CONFIG_FILE, {"strategy": "lora", "seed": 11, "lr": 5e-4,
                                                        "trust_remote_code": False,
                                                        "versions": {"transformers": "5.24"}})
    atomic_write_json(folder / schema.RUN_BASE_FILE, {"model": "workbench/demo-clip", "revision": None})
    with open(folder / schema.RUN_TRAIN_LOG, "w", encoding="utf-8") as f:
        for step in range(0, 50, 10):
            f.write(json.dumps({"step": step, "epoch": step / 50, "loss": round(2.0 - step / 50, 6),
                                "logit_scale": 14.29 + step / 10, "lr": 5e-4,
                                "val_accuracy": 0.6 + step / 200 if step % 20 == 0 else None,
                                "samples_per_s": 100.0}) + "\n")
        f.write('{"step": 50, "loss": 1.0')  # a crash mid-write: the reader must skip it
    atomic_write_json(folder / schema.RUN_ZEROSHOT_FILE, {
        "base": {"validation": 0.66, "test": 0.67}, "tuned": {"validation": 0.80, "test": 0.81},
        "wise": [{"alpha": a, "validation": 0.66 + 0.14 * a, "test": 0.67 + 0.14 * a, "gap": 0.10 + 0.25 * a}
                 for a in (0.0, 0.25, 0.5, 0.75, 1.0)]})


def write_run(folder: Path, *, roles: tuple[str, ...] = ("base", "tuned", "delta"), mtime: float | None = None) -> Path:
    """A complete run folder: config, base model, training log, zero-shot file and one audit."""
    write_training_files(folder)
    write_audit(folder / schema.RUN_AUDIT_DIR / AUDIT, roles=roles)
    if mtime is not None:
        set_mtime(folder, mtime)
    return folder


def set_mtime(folder: Path, mtime: float) -> None:
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (mtime, mtime))


def write_runs_root(root: Path) -> Path:
    """The four runs the dashboard tests use; derm-full is the newest."""
    write_run(root / "derm-full", mtime=2_000_000_000)
    write_run(root / "derm-base-only", roles=("base",), mtime=1_900_000_000)
    corrupt = write_run(root / "derm-corrupt", mtime=1_800_000_000)
    (corrupt / schema.RUN_AUDIT_DIR / AUDIT / schema.RESULTS_FILE).write_bytes(b"PAR1 this is not parquet")
    set_mtime(corrupt, 1_800_000_000)
    old = write_run(root / "derm-old-schema", mtime=1_700_000_000)
    write_audit(old / schema.RUN_AUDIT_DIR / AUDIT, schema_version=0)
    set_mtime(old, 1_700_000_000)
    return root

"""Signs that a fine-tuning run went wrong, said out loud: in the console and in ``run_health.json``.

Each detector takes plain numbers (accuracies, the logged losses and temperatures, the class
names) and returns a warning sentence or None, so each can be tested on hand-made values.
The run writes every sentence into ``<run>/run_health.json`` ({"warnings": [...], "checks":
{...}}) and prints it as a ``warning:`` line; nothing here stops a run.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from workbench import schema
from workbench.io import atomic_write_json

RUN_HEALTH_FILE = schema.RUN_HEALTH_FILE
# A logit scale (exp of CLIP's learned temperature parameter) this low leaves every softmax
# nearly flat: the model can no longer express confidence. CLIP starts at 1/0.07 = 14.3 and
# the clamp keeps it in [1, 100].
COLLAPSED_LOGIT_SCALE = 2.0
# Fewer logged losses than this say nothing about a trend.
MIN_LOSSES_FOR_TREND = 4


def tuned_below_base(base: Mapping[str, float], tuned: Mapping[str, float]) -> list[str]:
    """One warning per split on which the fine-tuned zero-shot accuracy is below the base model's."""
    return [
        f"fine-tuning lowered zero-shot accuracy on {split}: {tuned[split]:.1%} tuned vs {base[split]:.1%} base; "
        "try a lower --learning-rate, fewer --epochs or --strategy lora, or keep the base"
        for split in base
        if split in tuned and tuned[split] < base[split]
    ]


def loss_not_decreasing(losses: Sequence[float]) -> str | None:
    """A warning when the mean of the last quarter of logged losses is not below the first quarter's.

    Quarters of the logged values (at least one value each); with fewer than
    ``MIN_LOSSES_FOR_TREND`` values there is no trend to judge and None is returned.
    """
    values = [float(v) for v in losses if v is not None and math.isfinite(float(v))]
    if len(values) < MIN_LOSSES_FOR_TREND:
        return None
    window = max(1, len(values) // 4)
    first = sum(values[:window]) / window
    last = sum(values[-window:]) / window
    if last < first:
        return None
    return (
        f"training loss did not decrease: mean of the last {window} logged steps {last:.4f} >= "
        f"mean of the first {window} {first:.4f}; check the captions and try another --learning-rate"
    )


def single_class(class_names: Sequence[str]) -> str | None:
    """A warning when the label column holds one class: zero-shot accuracy is then 100% by construction."""
    if len(class_names) != 1:
        return None
    return (
        f"the label column holds a single class ({class_names[0]!r}): zero-shot accuracy is 100% whatever the model "
        "learns; point --label-column at a column with at least two classes"
    )


def temperature_collapsed(logit_scales: Sequence[float], floor: float = COLLAPSED_LOGIT_SCALE) -> str | None:
    """A warning when the last logged logit scale fell below ``floor`` (softmax nearly uniform)."""
    values = [float(v) for v in logit_scales if v is not None and math.isfinite(float(v))]
    if not values or values[-1] >= floor:
        return None
    return (
        f"the temperature collapsed: logit scale {values[-1]:.2f} at the end (started at {values[0]:.2f}; "
        f"below {floor:g} every prediction is nearly uniform); try a lower --learning-rate"
    )


def read_train_log(path: str | os.PathLike) -> list[dict]:
    """Records of ``train_log.jsonl`` in order; a trailing partial line is skipped."""
    p = Path(path)
    if not p.exists():
        return []
    records = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def run_health(
    *,
    base_accuracy: Mapping[str, float],
    tuned_accuracy: Mapping[str, float],
    train_log: Sequence[Mapping],
    class_names: Sequence[str],
) -> dict:
    """{"warnings": [sentence, ...], "checks": {name: the numbers judged}} for one finished run."""
    losses = [r.get("loss") for r in train_log]
    scales = [r.get("logit_scale") for r in train_log]
    warnings = [
        *tuned_below_base(base_accuracy, tuned_accuracy),
        *(w for w in (loss_not_decreasing(losses), single_class(class_names), temperature_collapsed(scales)) if w),
    ]
    return {
        "warnings": warnings,
        "checks": {
            "accuracy": {"base": dict(base_accuracy), "tuned": dict(tuned_accuracy)},
            "logged_losses": len([v for v in losses if v is not None]),
            "final_logit_scale": scales[-1] if scales else None,
            "classes": len(class_names),
        },
    }


def report_run_health(
    run_dir: str | os.PathLike, *, base_accuracy: Mapping[str, float], tuned_accuracy: Mapping[str, float],
    class_names: Sequence[str],
) -> dict:
    """Judge a finished run from its numbers and its ``train_log.jsonl``: print each warning, write ``run_health.json``."""
    health = run_health(
        base_accuracy=base_accuracy, tuned_accuracy=tuned_accuracy,
        train_log=read_train_log(Path(run_dir) / schema.RUN_TRAIN_LOG), class_names=class_names,
    )
    atomic_write_json(Path(run_dir) / RUN_HEALTH_FILE, health)
    for warning in health["warnings"]:
        print(f"warning: {warning}")
    return health

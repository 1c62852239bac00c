"""Evaluation of a fine-tuning run: zero-shot accuracy per split, and the WiSE-FT sweep with group gaps.

Every accuracy here is ``workbench.embed.zero_shot_accuracy`` (one definition of truth and
prediction for the whole workbench); these functions only choose what to evaluate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from workbench.data import PixelSet
from workbench.embed import group_accuracy_gaps, zero_shot_accuracy, zero_shot_hits
from workbench.train.wise import check_alphas, wise_model


def zero_shot_on_splits(
    model,
    processor,
    splits: Mapping[str, object],
    pixels: Mapping[str, PixelSet],
    class_names: Sequence[str],
    templates: Sequence[str],
    *,
    batch_size: int = 256,
) -> dict[str, float]:
    """{split: zero-shot accuracy} for every split given, in their order."""
    return {
        name: zero_shot_accuracy(model, processor, split, class_names, templates, pixels=pixels[name], batch_size=batch_size)
        for name, split in splits.items()
    }


def wise_sweep(
    base_state: Mapping[str, torch.Tensor],
    tuned,
    processor,
    splits: Mapping[str, object],
    pixels: Mapping[str, PixelSet],
    class_names: Sequence[str],
    templates: Sequence[str],
    alphas: Sequence[float],
    group_columns: Sequence[str],
    *,
    batch_size: int = 256,
) -> list[dict]:
    """One row per alpha: {"alpha", split: accuracy, ..., "gap": {column: max - min group accuracy}, "gap_split"}.

    The model at alpha is ``(1 - alpha) * base + alpha * tuned`` (WiSE-FT). Group gaps are
    measured on the last split (test when there is one): the trade-off a reviewer weighs is
    domain accuracy against the gap between groups.
    """
    base = type(tuned)(tuned.config)
    base.load_state_dict(dict(base_state))
    base.to(next(tuned.parameters()).device)
    gap_split = list(splits)[-1] if splits else None
    gap_columns = [c for c in group_columns if gap_split and c in splits[gap_split].column_names]
    rows = []
    for alpha in check_alphas(alphas):
        mixed = wise_model(base, tuned, alpha)
        row = {"alpha": alpha, **zero_shot_on_splits(mixed, processor, splits, pixels, class_names, templates, batch_size=batch_size)}
        if gap_columns:
            px = pixels[gap_split]
            hits = zero_shot_hits(mixed, processor, splits[gap_split], class_names, templates, pixels=px, batch_size=batch_size)
            row["gap"] = group_accuracy_gaps(hits, px.valid, splits[gap_split], gap_columns)
            row["gap_split"] = gap_split
        rows.append(row)
        del mixed
    return rows


def format_accuracies(accuracies: Mapping[str, float]) -> str:
    """``validation 25.2%, test 27.9%`` (or a note when there was nothing to evaluate)."""
    return ", ".join(f"{k} {v:.1%}" for k, v in accuracies.items()) or "(no evaluation splits)"


def wise_lines(rows: Sequence[Mapping]) -> list[str]:
    """The console lines of a WiSE-FT sweep, one per alpha."""
    lines = []
    for row in rows:
        accs = {k: v for k, v in row.items() if k not in ("alpha", "gap", "gap_split")}
        gaps = ", ".join(f"{c} gap {g:.1%}" for c, g in row.get("gap", {}).items())
        lines.append(f"WiSE-FT alpha={row['alpha']:.2f}: {format_accuracies(accs)}" + (f"; {gaps}" if gaps else ""))
    return lines

"""A validation split carved out of train, for data that ships without one.

The carve is stratified (every label x group cell gives the same share), seeded and
deterministic, so the trainer, the end-of-training audit and a later
``python -m workbench.audit --validation-fraction F --split-seed S`` all see the same rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ValidationHoldout:
    """Hold out ``fraction`` of ``source_split`` as split ``name`` when the data has no such split."""

    name: str = "validation"
    source_split: str = "train"
    fraction: float = 0.1
    seed: int = 0
    strata: tuple[str, ...] = ()  # columns whose value combinations are sampled alike (label, groups)

    def describe(self, held_rows: int, kept_rows: int) -> dict:
        """What config.json states about the carve."""
        return {
            "split": self.name, "carved_from": self.source_split, "fraction": self.fraction, "seed": self.seed,
            "stratified_by": list(self.strata), "rows": held_rows, "rows_left_in_" + self.source_split: kept_rows,
        }


def holdout_rows(strata_values: Sequence[tuple], fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the rows held out: round(fraction x size) rows of every stratum, drawn with ``seed``.

    Strata are visited in sorted order with one generator, so the result depends only on the
    values, the fraction and the seed (not on row order within the table beyond the indices).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"holdout fraction must lie strictly between 0 and 1, got {fraction:g}")
    by_stratum: dict[tuple, list[int]] = {}
    for i, key in enumerate(strata_values):
        by_stratum.setdefault(tuple(str(v) for v in key), []).append(i)
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for key in sorted(by_stratum):
        rows = np.asarray(by_stratum[key])
        take = math.floor(fraction * len(rows) + 0.5)  # round half up: 0.5 of a row counts as one
        if take:
            held.extend(rng.permutation(rows)[:take].tolist())
    return np.asarray(sorted(held), dtype=np.int64)

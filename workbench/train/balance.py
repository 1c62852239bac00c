"""Balanced fine-tuning: every group (or group x label cell) contributes equally to each epoch.

A training split where one group is mostly one class teaches the model that shortcut; a
group with few pairs barely moves the weights. Balancing resamples the pairs per epoch so
each cell (a combination of the chosen group columns, optionally with the class label)
supplies the same number of pairs: the epoch keeps its length N, each of the C cells gets
N // C pairs and the N % C left over go to cells drawn by the seeded generator (so the
expected count of every cell is exactly N / C and the realised counts differ by at most 1).
Within a cell, pairs are drawn by walking fresh random permutations of the cell's rows, so
a small cell repeats each of its rows as evenly as possible instead of at random.

The order is a pure function of (seed, epoch), like ``workbench.train.loop.epoch_order``:
every process draws the same permutation, and a resumed run sees the same batches.

``--balance-method reweight`` keeps the plain shuffle (every pair once per epoch) and
weights each pair's contrastive loss by its cell's share instead, ``(N / C) / n_cell``
(mean weight 1): the same expected contribution per cell without repeating the rows of
small cells or leaving out rows of large ones (``workbench.train.loss``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

BALANCE_METHODS = ("reweight", "resample")
# Reweighting is the default: on data with nothing to balance it cost nothing where resampling
# cost 2-6 points, and it closed a planted prevalence gap further (BENCHMARKS.md section 12).
DEFAULT_BALANCE_METHOD = "reweight"
# Cell names join the values of each column with this (as the audit names intersections).
CELL_SEP = "*"
# A cell whose pairs are repeated more than this many times per epoch on average is worth a note.
HEAVY_UPWEIGHT = 20.0


@dataclass(frozen=True)
class BalancePlan:
    """Cells of the training pairs and how an epoch draws from them.

    ``cell_of_row[i]`` is the cell of pair ``i``; ``cells`` their names in code order.
    """

    columns: tuple[str, ...]
    by_label: bool
    cells: tuple[str, ...]
    cell_of_row: torch.Tensor  # int64 (N,)

    @property
    def n_rows(self) -> int:
        return int(self.cell_of_row.numel())

    def cell_sizes(self) -> list[int]:
        return torch.bincount(self.cell_of_row, minlength=len(self.cells)).tolist()

    def cell_weights(self) -> list[float]:
        """Per-pair sampling weight of each cell relative to uniform sampling: (N / C) / n_cell."""
        share = self.n_rows / len(self.cells)
        return [share / size for size in self.cell_sizes()]

    def row_weights(self) -> torch.Tensor:
        """Each pair's loss weight under ``reweight``: its cell's weight (float32 (N,), mean 1)."""
        return torch.tensor(self.cell_weights(), dtype=torch.float32)[self.cell_of_row]

    def describe(self, method: str = "resample") -> dict:
        """What ``config.json`` states under ``"balance"``."""
        sizes, weights = self.cell_sizes(), self.cell_weights()
        how = {"resample": "per-epoch stratified resampling: N // C pairs per cell, remainder to seeded random cells",
               "reweight": "plain shuffle; each pair's contrastive loss weighted by its cell's weight (N / C) / n_cell"}
        return {
            "columns": list(self.columns),
            "by_label": self.by_label,
            "method": how[method],
            "cells": {c: {"size": s, "weight": round(w, 6)} for c, s, w in zip(self.cells, sizes, weights)},
        }

    def epoch_order(self, seed: int, epoch: int) -> torch.Tensor:
        """The N row indices of one epoch, each cell drawn N // C or N // C + 1 times, shuffled."""
        n, n_cells = self.n_rows, len(self.cells)
        # Another stream than the plain shuffle's (seed * 100_003 + epoch): no accidental coupling.
        g = torch.Generator().manual_seed((seed * 100_003 + epoch) * 2 + 1)
        quota = torch.full((n_cells,), n // n_cells, dtype=torch.int64)
        quota[torch.randperm(n_cells, generator=g)[: n % n_cells]] += 1
        members = _rows_per_cell(self.cell_of_row, n_cells)
        drawn = []
        for rows, count in zip(members, quota.tolist()):
            laps = -(-count // rows.numel())  # ceil: enough permutations to cover the quota
            walk = torch.cat([rows[torch.randperm(rows.numel(), generator=g)] for _ in range(laps)])
            drawn.append(walk[:count])
        order = torch.cat(drawn)
        return order[torch.randperm(n, generator=g)]


def _rows_per_cell(cell_of_row: torch.Tensor, n_cells: int) -> list[torch.Tensor]:
    return [torch.nonzero(cell_of_row == c).flatten() for c in range(n_cells)]


def balance_plan(
    group_values: Mapping[str, Sequence[str]],
    columns: Sequence[str],
    labels: Sequence[str] | None = None,
) -> BalancePlan:
    """Cells over the training pairs from their group values (and labels when ``labels`` is given).

    ``group_values[column][i]`` is pair ``i``'s value in ``column``. Only combinations that
    occur are cells (an empty cell cannot contribute anything).
    """
    if not columns:
        raise ValueError("balance_plan: no columns to balance; name at least one with --balance-groups")
    missing = [c for c in columns if c not in group_values]
    if missing:
        raise ValueError(
            f"--balance-groups {' '.join(missing)}: no such column in the training pairs "
            f"(available: {', '.join(group_values) or 'none'}); check the column name"
        )
    n = len(group_values[columns[0]])
    parts = [list(map(str, group_values[c])) for c in columns]
    if labels is not None:
        if len(labels) != n:
            raise ValueError(f"balance_plan: {len(labels)} labels for {n} pairs")
        parts.append(list(map(str, labels)))
    if n == 0:
        raise ValueError("balance_plan: no training pairs")
    keys = [CELL_SEP.join(values) for values in zip(*parts)]
    cells = tuple(sorted(set(keys)))
    index = {c: i for i, c in enumerate(cells)}
    cell_of_row = torch.tensor([index[k] for k in keys], dtype=torch.int64)
    return BalancePlan(tuple(columns), labels is not None, cells, cell_of_row)


def heavy_upweight_note(plan: BalancePlan, method: str = "resample") -> str | None:
    """A note when some cell is so small that each of its pairs repeats (or weighs) many times over per epoch."""
    heavy = [(c, w, s) for c, w, s in zip(plan.cells, plan.cell_weights(), plan.cell_sizes()) if w > HEAVY_UPWEIGHT]
    if not heavy:
        return None
    cell, weight, size = max(heavy, key=lambda item: item[1])
    return (
        f"note: balancing {'repeats' if method == 'resample' else 'weights'} each pair of {len(heavy)} small cell(s) "
        f"more than {HEAVY_UPWEIGHT:g} times {'per epoch' if method == 'resample' else 'over'} "
        f"(largest: {cell!r}, {size} pairs, weight {weight:.1f}); such a cell may be memorised, consider fewer columns"
    )

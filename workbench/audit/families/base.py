"""What an audit family declares: its metrics (once) and how it computes their rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:  # annotations only: spec imports the registry built from these declarations
    from workbench.audit.context import ModelContext
    from workbench.audit.spec import AuditSpec

# How a metric goes bad; a policy check on the metric then only needs thresholds.
DIRECTIONS = ("higher_is_worse", "lower_is_worse", "abs_higher_is_worse")
# How a value reads in a sentence: a share of images in percent (a difference of shares in
# points), or a plain number (a log ratio, an effect size, a ratio).
UNITS = ("share", "number")


@dataclass(frozen=True)
class MetricInfo:
    """One metric of the results table.

    ``direction`` is the policy's default for checks on this metric (one of
    :data:`DIRECTIONS`); None for a metric that is not checked against thresholds (a p-value).
    ``unit`` says how sentences print it (:data:`UNITS`). ``group_attains``: the row's
    ``group`` names the group that attains the statistic (the most over-represented one,
    for a maximum over groups) rather than identifying the row, so two models' rows are
    paired without it.
    """

    name: str
    description: str
    direction: str | None
    unit: str = "number"
    group_attains: bool = False

    def __post_init__(self) -> None:
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise ValueError(f"metric {self.name!r}: direction {self.direction!r} is not one of {DIRECTIONS}")
        if self.unit not in UNITS:
            raise ValueError(f"metric {self.name!r}: unit {self.unit!r} is not one of {UNITS}")


def _no_data_prompts(spec: AuditSpec, table: pd.DataFrame) -> list[str]:
    return []


@dataclass(frozen=True)
class Family:
    """An audit family: the metrics it reports and the functions that produce them.

    - ``prompts(spec, class_labels)``: every text the family needs encoded, in a stable order;
    - ``data_prompts(spec, table)``: texts that depend on values found in the data;
    - ``compute(ctx)``: adds the family's rows for one model role to ``ctx.collector``;
    - ``list_data_prompts``: whether ``summary.json`` lists the data-dependent texts one by one
      (False for texts that grow with the data, such as captions: the summary gives their count).
    """

    name: str
    metrics: tuple[MetricInfo, ...]
    prompts: Callable[[AuditSpec, Sequence[str] | None], list[str]]
    compute: Callable[[ModelContext], None]
    data_prompts: Callable[[AuditSpec, pd.DataFrame], list[str]] = _no_data_prompts
    list_data_prompts: bool = True

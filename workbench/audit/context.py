"""What every audit family works on: groups as views, the result collector, the per-model context.

The audit composes its families (``workbench/audit/families/``) over one
:class:`ModelContext` per model role. The context holds everything a family may read (the
model's image and prompt embeddings, the table, the group views, the bootstrap weights,
the spec) and the :class:`Collector` it writes its rows into, so a family's code names
what it uses instead of taking ten positional arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from workbench.audit.bootstrap import percentile_interval

if TYPE_CHECKING:  # only for annotations: spec imports the family registry, which imports this module
    from workbench.audit.spec import AuditSpec

INTERSECTION_SEP = "*"
ROW_KEY = ("model", "metric", "attribute", "group", "label", "prompt", "k", "target")


@dataclass
class View:
    """One sensitive attribute (or intersection) as integer codes over the audited rows."""

    name: str
    codes: np.ndarray
    groups: list[str]
    reference: int  # index into groups
    sizes: np.ndarray

    @property
    def members(self) -> np.ndarray:
        return np.eye(len(self.groups))[self.codes]

    @property
    def is_intersection(self) -> bool:
        return INTERSECTION_SEP in self.name


class Collector:
    """Result rows plus the bootstrap replicates behind each, keyed by row identity."""

    def __init__(self, audit: str, level: float, min_group_size: int):
        self.audit = audit
        self.level = level
        self.min_group_size = min_group_size
        self.rows: list[dict[str, Any]] = []
        self.reps: dict[tuple, np.ndarray] = {}
        self.predictions: list[pd.DataFrame] = []
        self.rankings: list[pd.DataFrame] = []

    @staticmethod
    def key(row: Mapping[str, Any]) -> tuple:
        return tuple(row[c] for c in ROW_KEY)

    def add(
        self,
        model: str,
        metric: str,
        value: float,
        reps: np.ndarray | None,
        *,
        attribute: str = "",
        group: str = "",
        label: str = "",
        prompt: str = "",
        k: int = 0,
        target: str = "",
        n: int = 0,
        status: str = "ok",
        note: str = "",
        interval: tuple[float, float] | None = None,
    ) -> None:
        """Add one row. ``reps`` are its bootstrap replicates (for p-values and paired deltas);
        the interval is their percentile interval unless ``interval`` gives a closed-form one."""
        low = high = float("nan")
        if reps is not None:
            # A ratio over a zero rate is undefined in that resample, not infinite.
            reps = np.asarray(reps, dtype=np.float64)
            reps = np.where(np.isfinite(reps), reps, np.nan)
        if status != "not_computed":
            if interval is not None:
                low, high = float(interval[0]), float(interval[1])
            elif reps is not None:
                low, high = (float(x[0]) for x in percentile_interval(np.asarray(reps)[:, None], self.level))
        if status == "not_computed":
            value = float("nan")
        row = {
            "model": model,
            "audit": self.audit,
            "metric": metric,
            "attribute": attribute,
            "group": group,
            "label": label,
            "prompt": prompt,
            "k": int(k),
            "target": target,
            "value": float(value),
            "ci_low": low,
            "ci_high": high,
            "n": int(n),
            "status": status,
            "note": note,
        }
        self.rows.append(row)
        if reps is not None and status != "not_computed":
            self.reps[self.key(row)] = np.asarray(reps, dtype=np.float32)

    def skip(self, model: str, metric: str, reason: str, **where: Any) -> None:
        self.add(model, metric, float("nan"), None, status="not_computed", note=reason, **where)

    def size_status(self, n: int) -> tuple[str, str]:
        if n < self.min_group_size:
            return "small_group", f"n={n} is below min_group_size={self.min_group_size}"
        return "ok", ""


@dataclass
class ModelContext:
    """Everything an audit family reads for one model role, and where it writes.

    ``weights`` is the (B+1, N) matrix of row multiplicities: row 0 is the data itself
    (all ones), rows 1..B the stratified bootstrap resamples shared by every model role;
    ``control_weights`` resamples the control prompts the same way, also shared by every
    role, so model-minus-model differences are paired in both.
    """

    role: str
    spec: AuditSpec
    table: pd.DataFrame
    image: np.ndarray  # (N, D) float32, L2-normalised, same row order as ``table``
    text: Mapping[str, np.ndarray]  # prompt -> (D,) L2-normalised
    views: list[View]
    weights: np.ndarray
    labels: list[str]  # class names of the zero-shot task
    label_problem: str  # why zero-shot accuracy cannot be computed ("" when it can)
    class_problem: str  # why class prompts cannot be built ("" when they can)
    collector: Collector
    warnings: list[str]  # shared by every role; reported once in the summary
    tests: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # family name -> hypothesis tests
    # (B+1, C) draw counts of the spec's control prompts: row 0 all ones (the panel itself), row b
    # the panel resampled inside image resample b. None when the audit has no skew section.
    control_weights: np.ndarray | None = None

    @property
    def n(self) -> int:
        return self.image.shape[0]

    @property
    def group_columns(self) -> list[str]:
        """The single (non-intersection) attributes, in audit order."""
        return [v.name for v in self.views if not v.is_intersection]


def drop_point_row(reps: np.ndarray) -> np.ndarray:
    """Replicates only: drop row 0 (the data itself) of a result computed with ``ModelContext.weights``."""
    return reps[1:]


# ---------------------------------------------------------------------------------------
# groups as views


def build_views(spec: AuditSpec, table: pd.DataFrame, warnings: list[str], not_computed: list[dict]) -> list[View]:
    """One :class:`View` per audited attribute and intersection found in ``table``.

    Problems (a missing column, a listed group without images, values the audit does not
    list) are appended to ``warnings`` / ``not_computed``, never raised.
    """
    views: dict[str, View] = {}
    for attr in spec.attributes:
        col = attr.column
        if col not in table.columns:
            reason = (
                f"group column {col!r} is not in the data (columns: {', '.join(map(str, table.columns))}); "
                "pass --group-columns or fix the audit's attributes"
            )
            warnings.append(reason)
            not_computed.append({"metric": f"all metrics for attribute {col!r}", "reason": reason})
            continue
        values = table[col].astype(str).to_numpy()
        present = sorted(set(values))
        listed = list(attr.groups or [])
        extra = [g for g in present if g not in listed]
        if listed and extra:
            counts = {g: int((values == g).sum()) for g in extra}
            warnings.append(f"column {col!r} holds values the audit does not list: {counts}; they are audited as their own groups")
        groups = [g for g in listed if g in present] + (extra if listed else present)
        for g in listed:
            if g not in present:
                reason = f"group {g!r} of {col!r} has no images in the data"
                warnings.append(reason)
                not_computed.append({"metric": "all metrics", "attribute": col, "group": g, "reason": reason})
        views[col] = _make_view(col, values, groups, attr.reference, warnings)
    for inter in spec.intersections:
        name = INTERSECTION_SEP.join(inter)
        missing = [c for c in inter if c not in views]
        if missing:
            reason = f"intersection {name!r} needs column(s) {missing} that are not in the data"
            not_computed.append({"metric": f"all metrics for attribute {name!r}", "reason": reason})
            continue
        parts = [views[c] for c in inter]
        values = np.array(
            [INTERSECTION_SEP.join(p.groups[c] for p, c in zip(parts, codes)) for codes in zip(*(p.codes for p in parts))]
        )
        present = set(values)
        groups = []
        for combo in _product([p.groups for p in parts]):
            g = INTERSECTION_SEP.join(combo)
            if g in present:
                groups.append(g)
            else:
                reason = f"intersection group {g!r} of {name!r} has no images in the data"
                warnings.append(reason)
                not_computed.append({"metric": "all metrics", "attribute": name, "group": g, "reason": reason})
        refs = [spec.attribute(c).reference for c in inter]
        reference = INTERSECTION_SEP.join(refs) if all(refs) else None
        views[name] = _make_view(name, values, groups, reference, warnings)
    return list(views.values())


def _product(lists: list[list[str]]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [()]
    for options in lists:
        out = [prefix + (o,) for prefix in out for o in options]
    return out


def _make_view(name: str, values: np.ndarray, groups: list[str], reference: str | None, warnings: list[str]) -> View:
    index = {g: i for i, g in enumerate(groups)}
    codes = np.array([index[v] for v in values], dtype=np.int64)
    sizes = np.bincount(codes, minlength=len(groups))
    if reference is not None and reference in index:
        ref = index[reference]
    else:
        ref = int(np.argmax(sizes))  # ties: the first listed group
        if reference is not None:
            warnings.append(f"reference group {reference!r} of {name!r} has no images; using the largest group {groups[ref]!r}")
    return View(name, codes, groups, ref, sizes)

"""Policy checks: results rows against warn/fail thresholds, with multiplicity control.

For each row a check selects:

- ``inconclusive``: the value could not be computed; or the estimate is acceptable but its
  interval reaches the fail threshold, or a group is below the minimum size (too little
  data to call it a pass).
- ``pass``: estimate on the acceptable side of ``warn`` and the interval clear of ``fail``.
- ``warn``: estimate beyond ``warn`` (or beyond ``fail`` without significant evidence).
- ``fail``: estimate beyond ``fail`` *and* the one-sided test (Wald, bootstrap standard
  error) that the true value lies beyond ``warn`` is significant after Holm's correction
  over every check row.

The overall verdict is the worst one in the order fail > warn > inconclusive > pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from workbench.audit.bootstrap import one_sided_p_value
from workbench.audit.context import ROW_KEY
from workbench.audit.metrics import holm_adjust
from workbench.audit.spec import AuditSpec, CheckSpec

SEVERITY = {"pass": 0, "inconclusive": 1, "warn": 2, "fail": 3}


def _beyond(value: float, threshold: float, direction: str) -> bool:
    if direction == "lower_is_worse":
        return value < threshold
    if direction == "abs_higher_is_worse":
        return abs(value) > threshold
    return value > threshold


def _select(results: pd.DataFrame, check: CheckSpec) -> pd.DataFrame:
    rows = results[results["metric"] == check.metric]
    if check.models is not None:
        rows = rows[rows["model"].isin(check.models)]
    else:
        rows = rows[rows["model"] != "delta"]
    for column in ("attribute", "group", "label", "prompt", "k", "target"):
        wanted = getattr(check, column)
        if wanted is not None:
            rows = rows[rows[column] == wanted]
    return rows


def _bad_end(low: float, high: float, direction: str) -> float:
    """The interval end on the bad side (NaN when there is no interval)."""
    if direction == "lower_is_worse":
        return low
    if direction == "abs_higher_is_worse":
        return max(abs(low), abs(high)) if not (math.isnan(low) or math.isnan(high)) else float("nan")
    return high


def apply_policy(
    spec: AuditSpec, results: pd.DataFrame, replicates: Mapping[tuple, np.ndarray], skipped: list[str] | None = None
) -> tuple[list[dict[str, Any]], str, int]:
    """Evaluate every policy check. Returns (check entries, overall verdict, number of tests).

    A check that names only model roles this audit does not have (``delta`` when a single
    model is audited) does not apply; it is reported in ``skipped`` instead of a verdict.
    """
    entries: list[dict[str, Any]] = []
    p_values: list[float] = []
    roles = set(results["model"])
    for check in spec.policy.checks:
        if check.models is not None and not roles & set(check.models):
            if skipped is not None:
                skipped.append(f"check {check.name!r} does not apply: it is for model role(s) {list(check.models)}, "
                               f"this audit has {sorted(roles)}")
            continue
        rows = _select(results, check)
        if rows.empty:
            entries.append(_entry(check, None, "inconclusive", "no result row matches this check (metric not computed for this data)"))
            p_values.append(float("nan"))
            continue
        for _, row in rows.iterrows():
            reps = replicates.get(tuple(row[c] for c in ROW_KEY))
            p = float("nan")
            if reps is not None and not math.isnan(row["value"]):
                value = float(row["value"])
                if check.direction == "abs_higher_is_worse":
                    reps, value = np.abs(reps), abs(value)
                p = one_sided_p_value(value, reps, check.warn, higher_is_worse=check.direction != "lower_is_worse")
            entries.append(_entry(check, row, "", ""))
            p_values.append(p)
    adjusted = holm_adjust(p_values) if p_values else np.array([])
    n_tests = int(np.sum(~np.isnan(np.asarray(p_values, dtype=float)))) if p_values else 0
    for entry, p, p_adj in zip(entries, p_values, adjusted):
        entry["p_value"] = None if math.isnan(p) else float(p)
        entry["p_holm"] = None if math.isnan(p_adj) else float(p_adj)
        if entry["verdict"]:
            continue
        entry["verdict"], entry["reason"] = _decide(entry, spec.policy.alpha)
    verdict = "inconclusive"
    if entries:
        verdict = max((e["verdict"] for e in entries), key=SEVERITY.__getitem__)
    return entries, verdict, n_tests


def _entry(check: CheckSpec, row, verdict: str, reason: str) -> dict[str, Any]:
    def get(column, default=None):
        if row is None:
            return default
        value = row[column]
        return value.item() if hasattr(value, "item") else value

    return {
        "name": check.name,
        "metric": check.metric,
        "model": get("model", ",".join(check.models or ())),
        "attribute": get("attribute", check.attribute or ""),
        "group": get("group", check.group or ""),
        "label": get("label", ""),
        "prompt": get("prompt", ""),
        "k": get("k", 0),
        "target": get("target", ""),
        "value": _none_if_nan(get("value")),
        "ci_low": _none_if_nan(get("ci_low")),
        "ci_high": _none_if_nan(get("ci_high")),
        "n": get("n", 0),
        "status": get("status", "not_computed"),
        "threshold": check.fail,
        "warn_threshold": check.warn,
        "direction": check.direction,
        "verdict": verdict,
        "reason": reason,
    }


def _none_if_nan(x):
    if x is None:
        return None
    return None if isinstance(x, float) and math.isnan(x) else x


def _decide(e: dict[str, Any], alpha: float) -> tuple[str, str]:
    value, direction = e["value"], e["direction"]
    if value is None or e["status"] == "not_computed":
        return "inconclusive", "not computed"
    low = e["ci_low"] if e["ci_low"] is not None else float("nan")
    high = e["ci_high"] if e["ci_high"] is not None else float("nan")
    shown = f"{value:.4g} [{low:.4g}, {high:.4g}]"
    if _beyond(value, e["threshold"], direction):
        if e["p_holm"] is not None and e["p_holm"] < alpha:
            return "fail", f"{shown} is beyond the fail threshold {e['threshold']} (beyond warn {e['warn_threshold']}: Holm p={e['p_holm']:.3g})"
        p = "no interval" if e["p_holm"] is None else f"Holm p={e['p_holm']:.3g}"
        return "warn", f"{shown} is beyond the fail threshold {e['threshold']} but not significantly beyond warn ({p})"
    if _beyond(value, e["warn_threshold"], direction):
        return "warn", f"{shown} is beyond the warn threshold {e['warn_threshold']}"
    bad = _bad_end(low, high, direction)
    if math.isnan(bad):
        return "inconclusive", f"{value:.4g} is within the warn threshold but has no interval"
    if _beyond(bad, e["threshold"], direction):
        return "inconclusive", f"{shown} is within the warn threshold but the interval reaches the fail threshold {e['threshold']}"
    if e["status"] == "small_group":
        return "inconclusive", f"{shown} is within thresholds but a group is below the minimum size"
    return "pass", f"{shown} is within the warn threshold {e['warn_threshold']}"

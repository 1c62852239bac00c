"""Policy checks: results rows against warn/fail thresholds, with multiplicity control.

The audit judges one *candidate* model (the fine-tuned one of a run folder, or the single
model audited) against an optional *reference* (its base). The candidate's checks decide
the verdict: absolute checks on the candidate's rows, regression and domain checks on the
candidate-minus-reference rows (paired intervals), the dominance check on the candidate's
group dominance. The same absolute checks on the reference are evaluated as context only
(``reference_checks``), with their own multiplicity correction; they never decide.

For each row a check selects:

- ``inconclusive``: the value could not be computed; or the estimate is acceptable but its
  interval reaches the fail threshold, has zero width (resampling shows no uncertainty, so
  the interval cannot support a pass), or a group is below the minimum size.
- ``pass``: estimate on the acceptable side of ``warn`` and the interval clear of ``fail``.
- ``warn``: estimate beyond ``warn`` (or beyond ``fail`` without significant evidence).
- ``fail``: estimate beyond ``fail`` *and* the one-sided test (Wald, bootstrap standard
  error) that the true value lies beyond ``warn`` is significant after Holm's correction
  over every check row of the candidate.

The verdict is the worst candidate check in the order fail > warn > inconclusive > pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from workbench.audit.bootstrap import one_sided_p_value
from workbench.audit.context import ROW_KEY
from workbench.audit.metrics import holm_adjust
from workbench.audit.spec import DELTA_ROLE, AuditSpec, CheckSpec, domain_check

SEVERITY = {"pass": 0, "inconclusive": 1, "warn": 2, "fail": 3}


def _beyond(value: float, threshold: float, direction: str) -> bool:
    if direction == "lower_is_worse":
        return value < threshold
    if direction == "abs_higher_is_worse":
        return abs(value) > threshold
    return value > threshold


def _select(results: pd.DataFrame, check: CheckSpec, role: str) -> pd.DataFrame:
    rows = results[(results["metric"] == check.metric) & (results["model"] == role)]
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


def policy_checks(spec: AuditSpec, has_reference: bool) -> list[CheckSpec]:
    """The audit's checks, plus the domain check when there is a reference and the policy asks for it."""
    checks = list(spec.policy.checks)
    if has_reference and spec.policy.domain_check and not any(c.kind == "domain" for c in checks):
        checks.append(domain_check())
    return checks


@dataclass
class Judgement:
    """The candidate's check entries and verdict, and the reference's entries as context."""

    checks: list[dict[str, Any]]
    verdict: str
    n_tests: int  # candidate check rows with a p-value (the Holm family that decides)
    reference_checks: list[dict[str, Any]] = field(default_factory=list)
    n_reference_tests: int = 0


def judge(
    spec: AuditSpec,
    results: pd.DataFrame,
    replicates: Mapping[tuple, np.ndarray],
    *,
    candidate: str,
    reference: str | None = None,
    skipped: list[str] | None = None,
) -> Judgement:
    """Evaluate every policy check for the candidate (verdict) and the reference (context).

    A check that cannot apply (a regression check without a reference, a check naming
    only roles this audit lacks) is reported in ``skipped`` instead of getting a verdict.
    """
    roles = set(results["model"])
    mine: list[tuple[dict[str, Any], float]] = []
    context: list[tuple[dict[str, Any], float]] = []
    for check in policy_checks(spec, reference is not None):
        if check.on_delta:
            if reference is None or DELTA_ROLE not in roles:
                if skipped is not None:
                    skipped.append(f"check {check.name!r} does not apply: it is for model role(s) [{DELTA_ROLE!r}] "
                                   f"(candidate minus reference), this audit has {sorted(roles)}")
                continue
            targets = [(DELTA_ROLE, mine)]
        elif check.models is not None:
            present = [m for m in check.models if m in roles]
            if not present:
                if skipped is not None:
                    skipped.append(f"check {check.name!r} does not apply: it is for model role(s) {list(check.models)}, "
                                   f"this audit has {sorted(roles)}")
                continue
            targets = [(m, mine if m == candidate else context) for m in present]
        else:
            targets = [(candidate, mine)] + ([(reference, context)] if reference is not None else [])
        for role, family in targets:
            rows = _select(results, check, role)
            if rows.empty:
                family.append((_entry(check, None, role, "inconclusive",
                                      "no result row matches this check (metric not computed for this data)"), float("nan")))
                continue
            for _, row in rows.iterrows():
                family.append((_entry(check, row, role, "", ""), _p_value(check, row, replicates)))
    n_tests = _decide_family(mine, spec.policy.alpha)
    n_reference = _decide_family(context, spec.policy.alpha)
    entries = [e for e, _ in mine]
    verdict = max((e["verdict"] for e in entries), key=SEVERITY.__getitem__) if entries else "inconclusive"
    return Judgement(entries, verdict, n_tests, [e for e, _ in context], n_reference)


def _p_value(check: CheckSpec, row: pd.Series, replicates: Mapping[tuple, np.ndarray]) -> float:
    """One-sided p-value that the row's true value lies on the acceptable side of ``warn``."""
    reps = replicates.get(tuple(row[c] for c in ROW_KEY))
    if reps is None or math.isnan(row["value"]):
        return float("nan")
    value = float(row["value"])
    if check.direction == "abs_higher_is_worse":
        reps, value = np.abs(reps), abs(value)
    return one_sided_p_value(value, reps, check.warn, higher_is_worse=check.direction != "lower_is_worse")


def _decide_family(family: list[tuple[dict[str, Any], float]], alpha: float) -> int:
    """Holm over the family's p-values, then each entry's verdict. Returns the number of tests."""
    p_values = [p for _, p in family]
    adjusted = holm_adjust(p_values) if p_values else np.array([])
    for (entry, p), p_adj in zip(family, adjusted):
        entry["p_value"] = None if math.isnan(p) else float(p)
        entry["p_holm"] = None if math.isnan(p_adj) else float(p_adj)
        if not entry["verdict"]:
            entry["verdict"], entry["reason"] = _decide(entry, alpha)
    return int(np.sum(~np.isnan(np.asarray(p_values, dtype=float)))) if p_values else 0


def _entry(check: CheckSpec, row, role: str, verdict: str, reason: str) -> dict[str, Any]:
    def get(column, default=None):
        if row is None:
            return default
        value = row[column]
        return value.item() if hasattr(value, "item") else value

    return {
        "name": check.name,
        "kind": check.kind,
        "metric": check.metric,
        "model": role,
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
    if low == high:
        return "inconclusive", (f"{shown} is within thresholds but its interval has zero width: the resamples show no "
                                "uncertainty here, which cannot support a pass")
    return "pass", f"{shown} is within the warn threshold {e['warn_threshold']}"

"""Variant minus candidate, row by row, with paired bootstrap intervals.

The joint audit (base, candidate and every variant in one ``run_audit`` call) computes each
row of every model on the same bootstrap resamples of the same images, and keeps each row's
replicates. The difference of two models' replicates is then the resampling distribution of
their paired difference: its percentile interval is the difference's interval, exactly as the
audit's own candidate-minus-reference ("delta") rows are built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from workbench import schema
from workbench.audit.bootstrap import percentile_interval, two_sided_p_value
from workbench.audit.context import ROW_KEY
from workbench.audit.families import METRIC_INFO
from workbench.report.mitigation import OVERALL_ACCURACY_KEY, describe_row
from workbench.report.text import is_accuracy_like

_WHERE = ("attribute", "group", "label", "prompt", "k", "target")


@dataclass(frozen=True)
class ComparedRow:
    """One results row to compare between models (matched without its group where the group only names who attains it)."""

    metric: str
    direction: str
    attribute: str = ""
    group: str = ""
    label: str = ""
    prompt: str = ""
    k: int = 0
    target: str = ""
    what: str = ""

    @property
    def group_attains(self) -> bool:
        info = METRIC_INFO.get(self.metric)
        return bool(info is not None and info.group_attains)

    @property
    def key(self) -> str:
        if self.metric == "accuracy" and self.group == schema.OVERALL and not self.attribute and not self.label:
            return OVERALL_ACCURACY_KEY
        group = "" if self.group_attains else self.group
        return "|".join(str(x) for x in (self.metric, self.attribute, group, self.label, self.prompt, self.k, self.target))

    def select(self, results: pd.DataFrame, role: str) -> pd.Series | None:
        rows = results[(results["model"] == role) & (results["metric"] == self.metric)]
        for column in _WHERE:
            if column == "group" and self.group_attains:
                continue
            rows = rows[rows[column] == getattr(self, column)]
        return None if rows.empty else rows.iloc[0]


OVERALL_ACCURACY = ComparedRow("accuracy", "lower_is_worse", group=schema.OVERALL, what="overall accuracy")


def rows_of_checks(checks: Sequence[Mapping[str, Any]]) -> list[ComparedRow]:
    """The rows the candidate's policy checks judge (regression checks: the same metric on the models), once each,
    then overall accuracy."""
    out: dict[str, ComparedRow] = {}
    for c in checks:
        if c.get("kind") == "domain":
            continue
        row = ComparedRow(
            metric=str(c["metric"]), direction=str(c.get("direction") or "higher_is_worse"),
            attribute=str(c.get("attribute") or ""), group=str(c.get("group") or ""), label=str(c.get("label") or ""),
            prompt=str(c.get("prompt") or ""), k=int(c.get("k") or 0), target=str(c.get("target") or ""),
        )
        what = describe_row(row.metric, attribute=row.attribute, group=row.group, prompt=row.prompt, k=row.k,
                            worse_group=str(c.get("worse_group") or ""), better_group=str(c.get("better_group") or ""))
        row = ComparedRow(**{**row.__dict__, "what": what})
        out.setdefault(row.key, row)
    out.setdefault(OVERALL_ACCURACY.key, OVERALL_ACCURACY)
    return list(out.values())


def _replicates(replicates: Mapping[tuple, np.ndarray], row: pd.Series) -> np.ndarray | None:
    reps = replicates.get(tuple(row[c] for c in ROW_KEY))
    return None if reps is None else np.asarray(reps, dtype=np.float64)


def _number(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else float(x)


def _change(direction: str, candidate: float, variant: float) -> str:
    if direction == "abs_higher_is_worse":
        better, worse = abs(variant) < abs(candidate), abs(variant) > abs(candidate)
    elif direction == "lower_is_worse":
        better, worse = variant > candidate, variant < candidate
    else:
        better, worse = variant < candidate, variant > candidate
    return "better" if better else "worse" if worse else "none"


def model_points(results: pd.DataFrame, roles: Sequence[str], rows: Sequence[ComparedRow]) -> list[dict[str, Any]]:
    """Each role's value and interval of each compared row (the trade-off chart's points)."""
    out = []
    for role in roles:
        for r in rows:
            found = r.select(results, role)
            if found is None:
                continue
            out.append({"role": role, "key": r.key, "what": r.what, "metric": r.metric,
                        "percent": is_accuracy_like(r.metric), "group": str(found["group"]),
                        "value": _number(found["value"]), "ci_low": _number(found["ci_low"]),
                        "ci_high": _number(found["ci_high"]), "n": int(found["n"])})
    return out


def variant_differences(
    results: pd.DataFrame,
    replicates: Mapping[tuple, np.ndarray],
    *,
    candidate: str,
    variants: Sequence[str],
    rows: Sequence[ComparedRow],
    level: float = 0.95,
) -> list[dict[str, Any]]:
    """Variant minus candidate for each compared row: estimate, paired percentile interval, p-value,
    whether the interval excludes 0 and whether the change is for the better (by the metric's direction).

    Rows missing for either model, or without replicates, are left out.
    """
    out = []
    for variant in variants:
        for r in rows:
            a, b = r.select(results, candidate), r.select(results, variant)
            if a is None or b is None or a["status"] == "not_computed" or b["status"] == "not_computed":
                continue
            reps_a, reps_b = _replicates(replicates, a), _replicates(replicates, b)
            if reps_a is None or reps_b is None:
                continue
            diff = float(b["value"]) - float(a["value"])
            reps = reps_b - reps_a
            low, high = (float(x[0]) for x in percentile_interval(reps[:, None], level))
            out.append(_difference_entry(
                variant, r, b,
                candidate=(float(a["value"]), _number(a["ci_low"]), _number(a["ci_high"])),
                variant_estimate=(float(b["value"]), _number(b["ci_low"]), _number(b["ci_high"])),
                interval=(low, high), p_value=float(two_sided_p_value(diff, reps)),
            ))
    return out


def _difference_entry(variant: str, r: ComparedRow, variant_row: pd.Series, *,
                      candidate: tuple[float, float | None, float | None],
                      variant_estimate: tuple[float, float | None, float | None],
                      interval: tuple[float, float], p_value: float) -> dict[str, Any]:
    """One row of the differences table: both estimates (value, CI), variant minus candidate with its
    interval, significance (the interval excludes 0) and the direction of a significant change."""
    low, high = interval
    significant = bool(low > 0 or high < 0)
    return {
        "variant": variant, "key": r.key, "what": r.what, "metric": r.metric, "direction": r.direction,
        "percent": is_accuracy_like(r.metric), "attribute": r.attribute, "group": str(variant_row["group"]),
        "label": r.label, "prompt": r.prompt, "k": r.k, "target": r.target,
        "candidate_value": candidate[0], "candidate_ci_low": candidate[1], "candidate_ci_high": candidate[2],
        "variant_value": variant_estimate[0], "variant_ci_low": variant_estimate[1],
        "variant_ci_high": variant_estimate[2],
        "difference": variant_estimate[0] - candidate[0], "ci_low": low, "ci_high": high,
        "p_value": p_value, "significant": significant,
        "change": _change(r.direction, candidate[0], variant_estimate[0]) if significant else "none",
        "n": int(variant_row["n"]),
    }


def _seed_side(results: pd.DataFrame, replicates: Mapping[tuple, np.ndarray], row: ComparedRow,
               roles: Sequence[str]) -> tuple[np.ndarray, np.ndarray, pd.Series] | None:
    """(values per training run, bootstrap replicates of their mean, the first run's row) or None if any is missing."""
    values, reps, first = [], [], None
    for role in roles:
        found = row.select(results, role)
        if found is None or found["status"] == "not_computed":
            return None
        r = _replicates(replicates, found)
        if r is None:
            return None
        values.append(float(found["value"]))
        reps.append(r)
        first = found if first is None else first
    return np.asarray(values), np.mean(reps, axis=0), first


def seed_differences(
    results: pd.DataFrame,
    replicates: Mapping[tuple, np.ndarray],
    *,
    variant: str,
    candidate_roles: Sequence[str],
    variant_roles: Sequence[str],
    rows: Sequence[ComparedRow],
    level: float = 0.95,
) -> list[dict[str, Any]]:
    """Mean of the variant's training runs minus mean of the candidate configuration's runs, per row.

    Every run is scored on the same images and bootstrap resamples, so the replicates of the
    two means' difference give the test-sample variance of the estimate (paired); the runs'
    spread gives the training variance, ``s_c^2 / n_c + s_v^2 / n_v`` (sample variances of the
    runs' values), which a single pair of runs cannot show. The interval is the estimate
    +- t(df) times the square root of their sum, df = n_c + n_v - 2; the variant's and the
    candidate's own intervals are built the same way from their side alone.
    """
    from scipy import stats

    n_c, n_v = len(candidate_roles), len(variant_roles)
    if n_c < 2 or n_v < 2:
        raise ValueError("seed_differences: needs at least 2 training runs on each side")
    t = float(stats.t.ppf(0.5 + level / 2, n_c + n_v - 2))
    out = []
    for r in rows:
        a, b = (_seed_side(results, replicates, r, roles) for roles in (candidate_roles, variant_roles))
        if a is None or b is None:
            continue
        (values_a, mean_reps_a, first_a), (values_b, mean_reps_b, first_b) = a, b
        mean_a, mean_b = float(values_a.mean()), float(values_b.mean())
        train_a, train_b = values_a.var(ddof=1) / n_c, values_b.var(ddof=1) / n_v
        se = float(np.sqrt(np.var(mean_reps_b - mean_reps_a, ddof=1) + train_a + train_b))
        se_a = float(np.sqrt(np.var(mean_reps_a, ddof=1) + train_a))
        se_b = float(np.sqrt(np.var(mean_reps_b, ddof=1) + train_b))
        diff = mean_b - mean_a
        p_value = float(2 * stats.t.sf(abs(diff) / se, n_c + n_v - 2)) if se > 0 else (1.0 if diff == 0 else 0.0)
        entry = _difference_entry(
            variant, r, first_b,
            candidate=(mean_a, mean_a - t * se_a, mean_a + t * se_a),
            variant_estimate=(mean_b, mean_b - t * se_b, mean_b + t * se_b),
            interval=(diff - t * se, diff + t * se), p_value=p_value,
        )
        entry.update(training_runs_candidate=n_c, training_runs_variant=n_v,
                     training_sd_candidate=float(values_a.std(ddof=1)), training_sd_variant=float(values_b.std(ddof=1)))
        out.append(entry)
    return out

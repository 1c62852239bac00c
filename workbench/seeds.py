"""Between-run spread: the same recipe trained with several seeds, each audited alike.

A bootstrap interval over test images says how much a number would move with other test
images; it says nothing about how much it moves when the same recipe is trained again.
An association seen in one run but not the next belongs to that run, not to the recipe
(see AUDIT_METRICS in the design notes: "resampling images only captures test-set noise").
This module reads the audit summaries of several run folders (files only, no model) and
puts, for every check of the candidate, the spread between runs next to the average
within-run interval.

    python -m workbench.seeds runs/medical-full-s0 runs/medical-full-s1 runs/medical-full-s2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from workbench import schema
from workbench.io import atomic_write_json, atomic_write_text

SEEDS_DIR = "seeds"
SEEDS_CSV = "seeds.csv"
SEEDS_JSON = "seeds.json"
# What identifies "the same check" across runs. The group is left out on purpose: which group
# is worse may change from run to run, and that change is part of what the spread shows.
CHECK_KEY = ("name", "metric", "attribute", "label", "prompt", "k", "target")
SPREAD_COLUMNS = (
    *CHECK_KEY, "n_runs", "values", "worse_groups", "verdicts", "mean", "between_run_sd", "min", "max",
    "within_run_half_width", "spread_ratio",
)


class SeedsError(ValueError):
    """Run folders that cannot be compared; the message names the folder and the fix."""


def audit_summary_path(run_dir: str | os.PathLike, audit: str | None = None) -> Path:
    """``<run>/audit/<name>/summary.json``; with one audit in the run, ``audit`` may be omitted."""
    root = Path(run_dir) / schema.RUN_AUDIT_DIR
    if audit:
        path = root / audit / schema.SUMMARY_FILE
        if not path.is_file():
            raise SeedsError(f"{path} does not exist; audit the run first (python -m workbench.audit --model {run_dir} ...)")
        return path
    found = sorted(root.glob(f"*/{schema.SUMMARY_FILE}")) if root.is_dir() else []
    if not found:
        raise SeedsError(f"{run_dir} has no audit results under {schema.RUN_AUDIT_DIR}/; audit the run first")
    if len(found) > 1:
        names = ", ".join(p.parent.name for p in found)
        raise SeedsError(f"{run_dir} holds several audits ({names}); choose one with --audit")
    return found[0]


def _number(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x)) else math.nan


def seed_spread(run_dirs: Sequence[str | os.PathLike], audit: str | None = None) -> pd.DataFrame:
    """One row per candidate check: its value in every run, their mean, spread and range, and
    the mean half-width of the within-run intervals.

    ``spread_ratio`` = between-run standard deviation / mean within-run half-width: near or
    above 1/1.96 the choice of training run moves the number as much as the test images do.
    """
    if len(run_dirs) < 2:
        raise SeedsError(f"between-run spread needs at least two run folders, got {len(run_dirs)}")
    per_check: dict[tuple, dict[str, list]] = {}
    for run in run_dirs:
        path = audit_summary_path(run, audit)
        try:
            summary = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SeedsError(f"{path}: cannot read ({err}); rerun the audit of {run}") from err
        for check in summary.get("checks", []):
            key = tuple(check.get(c, "") for c in CHECK_KEY)
            slot = per_check.setdefault(key, {"values": [], "half": [], "groups": [], "verdicts": []})
            value, low, high = (_number(check.get(c)) for c in ("value", "ci_low", "ci_high"))
            slot["values"].append(value)
            slot["half"].append((high - low) / 2)
            slot["groups"].append(check.get("worse_group") or check.get("group") or "")
            slot["verdicts"].append(check.get("verdict", ""))
    rows = []
    for key, slot in per_check.items():
        values = pd.Series(slot["values"], dtype=float)
        half = pd.Series(slot["half"], dtype=float).mean()
        sd = float(values.std(ddof=1)) if values.notna().sum() >= 2 else math.nan
        rows.append({
            **dict(zip(CHECK_KEY, key)),
            "n_runs": int(len(values)),
            "values": [None if math.isnan(v) else v for v in values],
            "worse_groups": slot["groups"],
            "verdicts": slot["verdicts"],
            "mean": float(values.mean()),
            "between_run_sd": sd,
            "min": float(values.min()),
            "max": float(values.max()),
            "within_run_half_width": float(half),
            "spread_ratio": sd / half if half and not math.isnan(half) and half > 0 else math.nan,
        })
    return pd.DataFrame(rows, columns=list(SPREAD_COLUMNS))


def format_spread(table: pd.DataFrame) -> str:
    """The spread table for a terminal: one line per check."""
    lines = [f"between-run spread over {int(table['n_runs'].max()) if len(table) else 0} runs "
             "(sd between runs vs mean within-run 95% half-width):"]
    for _, r in table.iterrows():
        where = " ".join(str(x) for x in (r["attribute"], r["prompt"], f"k={r['k']}" if r["k"] else "") if x)
        verdicts = ", ".join(f"{v} x{r['verdicts'].count(v)}" for v in dict.fromkeys(r["verdicts"]))
        lines.append(
            f"  {r['name']} [{where}]: mean {r['mean']:.4g} (range {r['min']:.4g} to {r['max']:.4g}), "
            f"sd between runs {r['between_run_sd']:.3g} vs within-run +/-{r['within_run_half_width']:.3g}; "
            f"verdicts {verdicts}"
        )
    return "\n".join(lines)


def write_spread(table: pd.DataFrame, output: str | os.PathLike, run_dirs: Sequence[str | os.PathLike]) -> Path:
    """``seeds.csv`` and ``seeds.json`` in ``output`` (atomic writes)."""
    out = Path(output)
    atomic_write_text(out / SEEDS_CSV, table.to_csv(index=False))
    records = json.loads(table.to_json(orient="records"))
    atomic_write_json(out / SEEDS_JSON, {"runs": [str(r) for r in run_dirs], "checks": records})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workbench.seeds",
        description="Between-run spread of every audit check over run folders of the same recipe with other seeds.",
    )
    parser.add_argument("runs", nargs="+", help="run folders, each audited (audit/<name>/summary.json)")
    parser.add_argument("--audit", default=None, help="audit name when a run holds several")
    parser.add_argument("--output", default=None, help=f"folder for {SEEDS_CSV} and {SEEDS_JSON} (default: none, print only)")
    args = parser.parse_args(argv)
    try:
        table = seed_spread(args.runs, args.audit)
    except SeedsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_spread(table))
    if args.output:
        print(f"written to {write_spread(table, args.output, args.runs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

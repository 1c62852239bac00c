"""What ``python -m workbench.mitigate`` costs on a run, and what the projection's settings do.

1. The documented command, timed as a user runs it (a subprocess on a copy of the run folder):
   wall time, and from ``variants/summary.json`` the seconds each remedy took to make its
   variant and the seconds of the joint audit with every variant's release gate.
2. ``--projection-sweep``: the projection remedy alone with each span (``differences``,
   ``prompts``) and calibration weight (0, 100), each on a fresh copy: how many checked rows
   each setting changed significantly for the better and for the worse, and the change in
   overall accuracy with its paired interval. The evidence for the projection's defaults
   (``workbench/mitigate/projection.py``).

    accelerate launch --quiet recipes/medical.py --output-dir runs/demo        # the demo run (about a minute)
    python bench/mitigation.py runs/demo --projection-sweep --output bench/results/mitigation.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib

REMEDY_FLAGS = ["--remedy", "balance", "align", "project", "wise", "--balance-by-label"]
SWEEP = [("differences", 0.0), ("differences", 100.0), ("prompts", 0.0), ("prompts", 100.0)]


def fresh_copy(run: Path, into: Path, name: str) -> Path:
    """The run folder without earlier variants (so every remedy is made anew)."""
    target = into / name
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("variants"))
    return target


def mitigate_command(run: Path, extra: list[str], threads: int) -> tuple[float, dict]:
    """Run the documented command in a subprocess; (wall seconds, summary.json)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    command = [sys.executable, "-m", "workbench.mitigate", str(run), *extra]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=benchlib.REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    return wall, json.loads((run / "variants" / "summary.json").read_text(encoding="utf-8"))


def tally(summary: dict, remedy: str) -> dict:
    mine = [d for d in summary["differences"] if d["variant"] == remedy]
    accuracy = next((d for d in mine if d["key"] == "accuracy|overall"), None)
    return {
        "rows": len(mine),
        "better": sum(d["change"] == "better" for d in mine),
        "worse": sum(d["change"] == "worse" for d in mine),
        "accuracy_difference": accuracy and round(accuracy["difference"], 4),
        "accuracy_ci": accuracy and [round(accuracy["ci_low"], 4), round(accuracy["ci_high"], 4)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder written by a recipe (e.g. runs/demo)")
    parser.add_argument("--seeds", type=int, default=1, help="--seeds of the timed command (default 1)")
    parser.add_argument("--projection-sweep", action="store_true", help="also compare the projection's settings")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default 0: every available core)")
    parser.add_argument("--output", default=None, help="also write the JSON to this file")
    args = parser.parse_args(argv)
    threads = args.threads if args.threads > 0 else len(os.sched_getaffinity(0))
    run = Path(args.run).resolve()
    scratch = Path(tempfile.mkdtemp(prefix="bench-mitigation-"))
    try:
        copy = fresh_copy(run, scratch, "all")
        flags = [*REMEDY_FLAGS, "--seeds", str(args.seeds)]
        wall, summary = mitigate_command(copy, flags, threads)
        result = {
            "benchmark": "mitigation",
            "machine": benchlib.machine(),
            "config": {"run": str(args.run), "command": f"python -m workbench.mitigate <run> {' '.join(flags)}",
                       "threads": threads, "n_boot": summary["n_boot"], "split": summary["split"]},
            "wall_s": round(wall, 1),
            "remedy_s": {v["remedy"]: v.get("seconds") for v in summary["variants"]},
            "joint_audit_s": summary.get("audit_seconds"),
            "sentences": {v["remedy"]: v["sentence"] for v in summary["variants"]},
            "tally": {v["remedy"]: tally(summary, v["remedy"]) for v in summary["variants"] if v["status"] == "ok"},
        }
        if args.projection_sweep:
            sweep = []
            for span, lam in SWEEP:
                copy = fresh_copy(run, scratch, f"project-{span}-{lam:g}")
                _, summary = mitigate_command(copy, ["--remedy", "project", "--project-span", span,
                                                     "--project-lambda", str(lam)], threads)
                sweep.append({"span": span, "lambda": lam, **tally(summary, "project")})
            result["projection_sweep"] = sweep
        benchlib.emit(result, args.output)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

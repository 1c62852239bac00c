"""Validity study of the audit's statistics on simulated data with a known truth.

    .venv/bin/python bench/validity.py            # full study, writes VALIDITY.md and bench/results/validity.json
    .venv/bin/python bench/validity.py --quick    # small version (about a minute), writes under bench/results/

Three questions, each answered with the numbers the audit itself reports
(``compute_audit``'s results table and policy verdicts), so the study tests the product:

(a) Coverage: how often the reported 95% interval of accuracy, accuracy difference and
    Skew@k (and, once the engine has it, specific skew) holds the true value, at group
    sizes 30/100/400/1600 and accuracies 0.5/0.9/0.99. Target: >= 93% in every cell.
(b) False fails: how often the gate fails a model with no planted bias, per check family
    and overall after Holm. Target: <= 5%. Two null worlds: groups treated alike, and a
    model that ranks every prompt by group (concept checks must not fail there; the
    group-dominance check should).
(c) Power: how often the gate fails, and the interval excludes 0, as a planted accuracy
    gap or concept association grows.

Data come from :mod:`workbench.audit.simulate`. Every replicate's seed is derived from
the study seed and the replicate's name, so a rerun gives the same numbers.

The check families are one registry (:data:`CHECK_FAMILIES`); a family whose metric the
engine does not produce yet is listed as missing in the output and skipped, so adding
one is one entry there.
"""

from __future__ import annotations

import os

# One BLAS thread per process: the machine is shared and the matrices are small.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable, Mapping, Sequence  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Coverage of the engine before the edge-safe accuracy intervals, kept for comparison.
BASELINE = REPO / "bench" / "results" / "validity-baseline-percentile.json"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from workbench.audit.intervals import wilson_interval  # noqa: E402
from workbench.audit.simulate import ModelBehaviour, SimulatedAudit, simulate_audit_inputs  # noqa: E402

ROLE = "model"  # a single candidate, no reference: the absolute checks
LEVEL = 0.95
COVERAGE_TARGET = 0.93
FALSE_FAIL_TARGET = 0.05
ALPHA = 0.05
ATTRIBUTE = "group"
NULL_PROMPT = "a photo of concept one"
PLANTED_PROMPT = "a photo of concept two"
# The lower accuracy of the third group in the coverage cells: a non-zero true difference
# next to the equal-accuracy pair, at every baseline accuracy.
LOWER_ACCURACY = {0.5: 0.4, 0.9: 0.8, 0.99: 0.95}
COVERAGE_PLANTED_SHIFT = 0.5  # SD units; gives a true Skew@k of about +0.3 for the favoured group
# "Sorts everything by group": every prompt shifts the favoured group by this (true Skew@k
# about 0.46 at k/N = 1/4, beyond the concept checks' fail threshold on every prompt).
DOMINANCE_SHIFT = 1.0
DEFAULT_ACCURACY = 0.9
# Two zero-shot classes: per-group accuracy does not depend on the number of classes by
# construction, and every class adds per-class rows (class accuracy, AUC) the study does not read.
STUDY_CLASSES = ("circle", "square")


def depth_k(n_images: int) -> int:
    """The k of Skew@k used throughout: a quarter of the images, at most 100 (the shipped audits' k)."""
    return max(5, min(100, n_images // 4))


# ---------------------------------------------------------------------------------------
# what the engine offers


def engine_metrics() -> set[str]:
    """Metric names the engine produces (its families register them in ``schema.METRICS`` on import)."""
    import workbench.audit.core  # noqa: F401  (registers the families' metrics)
    from workbench import schema

    return set(schema.METRICS)


def engine_has_controls() -> bool:
    """Specific skew needs a control panel in the spec (``skew.controls``)."""
    return "specific_skew" in engine_metrics()


@dataclass(frozen=True)
class CheckFamily:
    """One family of policy checks: which metric, which rows, which thresholds.

    ``checks(sim, k)`` returns the policy check entries (as in ``audits/*.yaml``) for a
    simulated data set audited at depth ``k``. ``fires_correctly_in`` names the null worlds
    where this family failing is the right answer rather than a false fail.
    """

    name: str
    metric: str
    description: str
    checks: Callable[[SimulatedAudit, int], list[dict[str, Any]]]
    fires_correctly_in: tuple[str, ...] = ()


# Thresholds: the shipped demo audit's (audits/derm_demo.yaml). Skew is in log units:
# 0.2 ~ 1.22x over-representation, 0.4 ~ 1.49x.
ACCURACY_GAP_WARN, ACCURACY_GAP_FAIL = 0.05, 0.10
SKEW_WARN, SKEW_FAIL = 0.20, 0.40
DOMINANCE_WARN, DOMINANCE_FAIL = 0.25, 0.50


def _accuracy_checks(sim: SimulatedAudit, k: int) -> list[dict[str, Any]]:
    return [{"name": "accuracy_gap", "metric": "accuracy_gap", "attribute": sim.attribute,
             "warn": ACCURACY_GAP_WARN, "fail": ACCURACY_GAP_FAIL}]


def _concept_checks_for(metric: str, sim: SimulatedAudit, k: int) -> list[dict[str, Any]]:
    return [{"name": f"{metric}_{i}", "metric": metric, "attribute": sim.attribute, "prompt": p, "k": k,
             "target": "uniform", "warn": SKEW_WARN, "fail": SKEW_FAIL}
            for i, p in enumerate(sim.neutral_prompts)]


def _concept_checks(metric: str) -> Callable[[SimulatedAudit, int], list[dict[str, Any]]]:
    # a partial of a module-level function, so families can travel to worker processes
    return partial(_concept_checks_for, metric)


def _dominance_checks(sim: SimulatedAudit, k: int) -> list[dict[str, Any]]:
    return [{"name": "group_dominance", "metric": "group_dominance", "attribute": sim.attribute, "k": k,
             "target": "uniform", "warn": DOMINANCE_WARN, "fail": DOMINANCE_FAIL}]


# The registry. The concept family is the prompt-specific check of the verdict contract;
# while the engine lacks it, the plain MaxSkew check (what the gate used before) stands in
# and the output says so.
CHECK_FAMILIES: tuple[CheckFamily, ...] = (
    CheckFamily("accuracy", "accuracy_gap", "largest accuracy difference between groups", _accuracy_checks),
    CheckFamily("concept", "specific_max_skew", "prompt-specific MaxSkew@k, one check per neutral prompt",
                _concept_checks("specific_max_skew")),
    CheckFamily("dominance", "group_dominance", "model ranks images by group whatever the prompt", _dominance_checks,
                fires_correctly_in=("sorts_by_group",)),
)
STAND_INS: dict[str, CheckFamily] = {
    "concept": CheckFamily("concept", "max_skew", "plain MaxSkew@k per neutral prompt (stand-in: the engine has no "
                           "specific_max_skew yet)", _concept_checks("max_skew")),
}


def active_families(metrics: set[str] | None = None) -> tuple[list[CheckFamily], list[str]]:
    """Families the engine can evaluate now (stand-ins where needed) and the missing ones."""
    metrics = engine_metrics() if metrics is None else metrics
    active, missing = [], []
    for family in CHECK_FAMILIES:
        if family.metric in metrics:
            active.append(family)
        elif family.name in STAND_INS and STAND_INS[family.name].metric in metrics:
            active.append(STAND_INS[family.name])
            missing.append(family.metric)
        else:
            missing.append(family.metric)
    return active, missing


# ---------------------------------------------------------------------------------------
# one audit of one simulated data set


def study_spec(sim: SimulatedAudit, *, k: int, checks: Sequence[dict[str, Any]], n_boot: int, seed: int,
               with_controls: bool | None = None):
    """The audit definition for a simulated data set, parsed by the product's own parser.

    ``with_controls``: pass the simulator's control panel as ``skew.controls`` (default: when
    the engine has specific skew). Without it the engine would use its shipped panel, whose
    prompts the simulated embeddings do not contain.
    """
    from workbench.audit.spec import parse_audit_spec

    definition: dict[str, Any] = {
        "name": "validity",
        "attributes": [{"column": sim.attribute, "groups": list(sim.groups), "reference": sim.groups[0]}],
        "min_group_size": 30,
        "classes": {"labels": list(sim.classes), "templates": list(sim.class_templates)},
        "policy": {"alpha": ALPHA, "checks": list(checks)},
        "bootstrap": {"n_boot": int(n_boot), "seed": int(seed), "level": LEVEL},
    }
    definition["skew"] = {"prompts": list(sim.neutral_prompts), "k": [int(k)], "targets": ["uniform"]}
    if engine_has_controls() if with_controls is None else with_controls:
        definition["skew"]["controls"] = list(sim.control_prompts)
    return parse_audit_spec(definition, "<validity study>")


def run_audit_on(sim: SimulatedAudit, spec, *, n_boot: int, seed: int):
    from workbench.audit.core import compute_audit

    return compute_audit(spec, sim.table, sim.embeddings, compare=None, n_boot=n_boot, seed=seed)


def replicate_seed(*parts: object) -> int:
    """A stable 31-bit seed from a replicate's name (same name, same data, on every machine)."""
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


def _rows(results: pd.DataFrame, metric: str, **where: Any) -> pd.DataFrame:
    rows = results[(results["metric"] == metric) & (results["model"] == ROLE)]
    for column, value in where.items():
        rows = rows[rows[column] == value]
    return rows


def _one_row(results: pd.DataFrame, metric: str, **where: Any) -> pd.Series:
    rows = _rows(results, metric, **where)
    if len(rows) != 1:
        raise RuntimeError(f"expected one {metric} row for {where}, found {len(rows)}")
    return rows.iloc[0]


# A small tolerance so that a true value of exactly 0 computed as 1e-15 counts as inside
# an interval that ends at exactly 0.
_TRUTH_TOL = 1e-9


def interval_record(row: pd.Series, truth: float) -> dict[str, Any]:
    low, high = float(row["ci_low"]), float(row["ci_high"])
    missing = math.isnan(low) or math.isnan(high)
    return {
        "covered": (not missing) and low - _TRUTH_TOL <= truth <= high + _TRUTH_TOL,
        "missing": missing,
        "below": (not missing) and truth < low - _TRUTH_TOL,  # interval entirely above the truth
        "above": (not missing) and truth > high + _TRUTH_TOL,
        "zero_width": (not missing) and high - low <= 0.0,
        "width": float("nan") if missing else high - low,
        "estimate": float(row["value"]),
        "truth": float(truth),
    }


# ---------------------------------------------------------------------------------------
# (a) coverage


@dataclass(frozen=True)
class CoverageCell:
    group_size: int
    accuracy: float

    @property
    def lower_accuracy(self) -> float:
        return LOWER_ACCURACY.get(self.accuracy, max(0.0, self.accuracy - 0.1))


# One replicate's coverage records, keyed by (quantity, detail) for aggregation.
Records = dict[str, list[dict[str, Any]]]


def coverage_replicate(cell: CoverageCell, replicate: int, *, study_seed: int, n_boot: int,
                       adjust: Callable[[SimulatedAudit, pd.DataFrame], pd.DataFrame] | None = None) -> Records:
    """One simulated data set of a coverage cell, audited, every interval scored against the truth.

    Three groups of ``group_size`` images: ``a`` (the reference) and ``b`` at ``accuracy``,
    ``c`` at the cell's lower accuracy; one neutral prompt with no association and one
    favouring ``a`` by :data:`COVERAGE_PLANTED_SHIFT`. ``adjust`` may rewrite the results
    before scoring (the tests use it to plant a deliberately broken interval).
    """
    n = cell.group_size
    groups = {"a": n, "b": n, "c": n}
    behaviour = ModelBehaviour(accuracy={"a": cell.accuracy, "b": cell.accuracy, "c": cell.lower_accuracy},
                               planted={PLANTED_PROMPT: COVERAGE_PLANTED_SHIFT}, favoured_group="a")
    seed = replicate_seed(study_seed, "coverage", n, cell.accuracy, replicate)
    sim = simulate_audit_inputs(groups, {ROLE: behaviour}, seed=seed, attribute=ATTRIBUTE, classes=STUDY_CLASSES,
                                neutral_prompts=(NULL_PROMPT, PLANTED_PROMPT), control_prompts=())
    k = depth_k(sim.n)
    spec = study_spec(sim, k=k, checks=[], n_boot=n_boot, seed=seed, with_controls=False)
    results = run_audit_on(sim, spec, n_boot=n_boot, seed=seed).results
    if adjust is not None:
        results = adjust(sim, results)
    out: Records = defaultdict(list)
    for g in ("a", "b"):
        row = _one_row(results, "accuracy", attribute=ATTRIBUTE, group=g)
        out["accuracy"].append(interval_record(row, sim.true_accuracy(ROLE, g)))
    row = _one_row(results, "accuracy", attribute=ATTRIBUTE, group="c")
    out["accuracy_lower"].append(interval_record(row, sim.true_accuracy(ROLE, "c")))
    row = _one_row(results, "accuracy_difference", attribute=ATTRIBUTE, group="b")
    out["difference_zero"].append(interval_record(row, sim.true_accuracy_difference(ROLE, "b", "a")))
    row = _one_row(results, "accuracy_difference", attribute=ATTRIBUTE, group="c")
    out["difference_gap"].append(interval_record(row, sim.true_accuracy_difference(ROLE, "c", "a")))
    for name, prompt in (("skew_null", NULL_PROMPT), ("skew_planted", PLANTED_PROMPT)):
        truth = sim.true_skew(ROLE, prompt, k)
        for g in sim.groups:
            row = _one_row(results, "skew", attribute=ATTRIBUTE, prompt=prompt, k=k, target="uniform", group=g)
            out[name].append(interval_record(row, truth[g]))
    return dict(out)


def specific_coverage_replicate(group_size: int, replicate: int, *, study_seed: int, n_boot: int) -> Records:
    """Coverage of specific skew in a model that sorts by group, with one planted concept.

    Two groups; every prompt (controls included) favours ``a`` by :data:`DOMINANCE_SHIFT`;
    the planted prompt by :data:`COVERAGE_PLANTED_SHIFT` more. True specific skew: 0 for
    the unplanted prompt, Skew(planted + dominance) - Skew(dominance) for the planted one.
    """
    groups = {"a": group_size, "b": group_size}
    behaviour = ModelBehaviour(accuracy=DEFAULT_ACCURACY, planted={PLANTED_PROMPT: COVERAGE_PLANTED_SHIFT},
                               dominance=DOMINANCE_SHIFT, favoured_group="a")
    seed = replicate_seed(study_seed, "specific-coverage", group_size, replicate)
    sim = simulate_audit_inputs(groups, {ROLE: behaviour}, seed=seed, attribute=ATTRIBUTE, classes=STUDY_CLASSES,
                                neutral_prompts=(NULL_PROMPT, PLANTED_PROMPT))
    k = depth_k(sim.n)
    spec = study_spec(sim, k=k, checks=[], n_boot=n_boot, seed=seed, with_controls=True)
    results = run_audit_on(sim, spec, n_boot=n_boot, seed=seed).results
    out: Records = defaultdict(list)
    for name, prompt in (("specific_null", NULL_PROMPT), ("specific_planted", PLANTED_PROMPT)):
        truth = sim.true_specific_skew(ROLE, prompt, k)
        for g in sim.groups:
            row = _one_row(results, "specific_skew", attribute=ATTRIBUTE, prompt=prompt, k=k, target="uniform", group=g)
            out[name].append(interval_record(row, truth[g]))
    return dict(out)


def exact_coverage(group_size: int, p: float, p_other: float | None = None) -> float:
    """Exact coverage of Wilson (one group) or Newcombe (``p - p_other``, equal sizes) by enumeration.

    The binomial probabilities of every possible count (pair of counts) whose interval holds
    the truth, summed: what the Monte Carlo coverage of the audit's rows should estimate when
    the engine uses these intervals.
    """
    from scipy.stats import binom

    from workbench.audit.intervals import newcombe_interval

    counts = np.arange(group_size + 1)
    if p_other is None:
        low, high = wilson_interval(counts, group_size)
        return float(binom.pmf(counts, group_size, p)[(low <= p) & (p <= high)].sum())
    low, high = newcombe_interval(counts[:, None], group_size, counts[None, :], group_size)
    joint = binom.pmf(counts, group_size, p)[:, None] * binom.pmf(counts, group_size, p_other)[None, :]
    truth = p - p_other
    return float(joint[(low <= truth + _TRUTH_TOL) & (truth - _TRUTH_TOL <= high)].sum())


def summarise_intervals(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Coverage with its own Wilson interval, and what the misses look like."""
    count = len(records)
    covered = sum(r["covered"] for r in records)
    low, high = wilson_interval(covered, count) if count else (float("nan"), float("nan"))
    widths = [r["width"] for r in records if not math.isnan(r["width"])]
    return {
        "n": count,
        "coverage": covered / count if count else float("nan"),
        "coverage_ci": [float(low), float(high)],
        "interval_above_truth": sum(r["below"] for r in records) / count if count else float("nan"),
        "interval_below_truth": sum(r["above"] for r in records) / count if count else float("nan"),
        "zero_width": sum(r["zero_width"] for r in records) / count if count else float("nan"),
        "missing": sum(r["missing"] for r in records) / count if count else float("nan"),
        "mean_width": float(np.mean(widths)) if widths else float("nan"),
        "mean_truth": float(np.mean([r["truth"] for r in records])) if records else float("nan"),
    }


def coverage_tolerance(nominal: float, replicates: int, sigmas: float = 3.0) -> float:
    """Lowest coverage estimate consistent with ``nominal`` at ``sigmas`` binomial standard errors."""
    return nominal - sigmas * math.sqrt(nominal * (1.0 - nominal) / replicates)


# ---------------------------------------------------------------------------------------
# (b) false fails and (c) power: the gate's verdicts


@dataclass(frozen=True)
class GateWorld:
    """A simulated world the gate is run on: two groups of ``group_size``."""

    name: str
    group_size: int
    accuracy_gap: float = 0.0  # group b's accuracy is DEFAULT_ACCURACY minus this
    concept_shift: float = 0.0  # the planted prompt favours group a by this (SD units)
    dominance: float = 0.0

    def behaviour(self) -> ModelBehaviour:
        planted = {PLANTED_PROMPT: self.concept_shift} if self.concept_shift else {}
        return ModelBehaviour(accuracy={"a": DEFAULT_ACCURACY, "b": DEFAULT_ACCURACY - self.accuracy_gap},
                              planted=planted, dominance=self.dominance, favoured_group="a")


def gate_replicate(world: GateWorld, replicate: int, *, study_seed: int, n_boot: int,
                   families: Sequence[CheckFamily], with_controls: bool | None = None) -> dict[str, Any]:
    """One audit of one data set of ``world``: each check's verdict, and the planted rows' intervals.

    The data set depends on the world and replicate only, so runs with different check
    families (the contrast with the plain MaxSkew check) judge the very same data.
    """
    seed = replicate_seed(study_seed, "gate", world.name, world.group_size, world.accuracy_gap, world.concept_shift,
                          world.dominance, replicate)
    sim = simulate_audit_inputs({"a": world.group_size, "b": world.group_size}, {ROLE: world.behaviour()}, seed=seed,
                                attribute=ATTRIBUTE, classes=STUDY_CLASSES)
    k = depth_k(sim.n)
    checks = [c for family in families for c in family.checks(sim, k)]
    family_of = {c["name"]: family.name for family in families for c in family.checks(sim, k)}
    spec = study_spec(sim, k=k, checks=checks, n_boot=n_boot, seed=seed, with_controls=with_controls)
    audit = run_audit_on(sim, spec, n_boot=n_boot, seed=seed)
    verdicts: dict[str, list[str]] = defaultdict(list)
    planted_prompt_verdict = ""
    for entry in audit.summary["checks"]:
        if entry.get("model", ROLE) not in (ROLE, ""):
            continue
        family = family_of.get(entry["name"])
        if family is None:
            continue  # a check the engine adds on its own (none for a single model today)
        verdicts[family].append(entry["verdict"])
        if family == "concept" and entry.get("prompt") == PLANTED_PROMPT:
            planted_prompt_verdict = entry["verdict"]
    results = audit.results
    difference = _one_row(results, "accuracy_difference", attribute=ATTRIBUTE, group="b")
    concept_metric = next((f.metric for f in families if f.name == "concept"), "")
    concept_row = (_one_row(results, concept_metric, attribute=ATTRIBUTE, prompt=PLANTED_PROMPT, k=k, target="uniform")
                   if concept_metric else None)
    # "Interval excludes 0" is read on the favoured group's signed row (specific_skew, else
    # skew): a max over groups is >= 0 by construction and its percentile interval excludes
    # 0 even with no association at all.
    signed_metric = "specific_skew" if concept_metric == "specific_max_skew" else "skew"
    signed_row = _one_row(results, signed_metric, attribute=ATTRIBUTE, prompt=PLANTED_PROMPT, k=k, target="uniform",
                          group="a")
    return {
        "verdicts": dict(verdicts),
        "overall": audit.summary["verdict"],
        "planted_prompt_verdict": planted_prompt_verdict,
        # accuracy of b minus a: the gap is planted as b below a, so "excludes 0" means high < 0
        "difference_excludes_zero": bool(float(difference["ci_high"]) < 0.0),
        "concept_excludes_zero": bool(float(signed_row["ci_low"]) > 0.0),
        "signed_metric": signed_metric,
        "concept_value": float(concept_row["value"]) if concept_row is not None else float("nan"),
        "k": k,
        "true_concept_specific_max_skew": max(sim.true_specific_skew(ROLE, PLANTED_PROMPT, k).values()),
        "true_concept_max_skew": sim.true_max_skew(ROLE, PLANTED_PROMPT, k),
    }


def _rate(hits: int, count: int) -> dict[str, Any]:
    low, high = wilson_interval(hits, count) if count else (float("nan"), float("nan"))
    return {"rate": hits / count if count else float("nan"), "ci": [float(low), float(high)], "hits": int(hits),
            "n": int(count)}


def summarise_gate(world: GateWorld, outcomes: Sequence[dict[str, Any]], families: Sequence[CheckFamily]) -> dict[str, Any]:
    """Fail rates per family and overall; in worlds where a family should fire, its rate is a detection rate."""
    count = len(outcomes)
    per_family = {}
    for family in families:
        fails = sum("fail" in o["verdicts"].get(family.name, []) for o in outcomes)
        warns = sum("warn" in o["verdicts"].get(family.name, []) and "fail" not in o["verdicts"].get(family.name, [])
                    for o in outcomes)
        per_family[family.name] = {
            "metric": family.metric,
            "checks_per_audit": max((len(o["verdicts"].get(family.name, [])) for o in outcomes), default=0),
            "fail": _rate(fails, count),
            "warn_only": _rate(warns, count),
            "should_fire": world.name in family.fires_correctly_in,
        }
    judged = [f.name for f in families if world.name not in f.fires_correctly_in]
    false_fails = sum(any("fail" in o["verdicts"].get(name, []) for name in judged) for o in outcomes)
    return {
        "world": asdict(world),
        "replicates": count,
        "families": per_family,
        "false_fail_overall": _rate(false_fails, count),
        "judged_families": judged,
        "any_fail": _rate(sum(o["overall"] == "fail" for o in outcomes), count),
        "planted_prompt_fail": _rate(sum(o["planted_prompt_verdict"] == "fail" for o in outcomes), count),
        "difference_excludes_zero": _rate(sum(o["difference_excludes_zero"] for o in outcomes), count),
        "concept_excludes_zero": _rate(sum(o["concept_excludes_zero"] for o in outcomes), count),
        "accuracy_fail": per_family.get("accuracy", {}).get("fail", _rate(0, 0)),
        "true_concept_specific_max_skew": float(np.mean([o["true_concept_specific_max_skew"] for o in outcomes])),
        "true_concept_max_skew": float(np.mean([o["true_concept_max_skew"] for o in outcomes])),
        "mean_concept_value": float(np.nanmean([o["concept_value"] for o in outcomes])) if outcomes else float("nan"),
        "k": outcomes[0]["k"] if outcomes else 0,
    }


# ---------------------------------------------------------------------------------------
# the study


@dataclass(frozen=True)
class StudyConfig:
    coverage_sizes: tuple[int, ...] = (30, 100, 400, 1600)
    coverage_accuracies: tuple[float, ...] = (0.5, 0.9, 0.99)
    coverage_replicates: int = 150
    specific_sizes: tuple[int, ...] = (100, 400)
    gate_sizes: tuple[int, ...] = (100, 400)
    null_replicates: int = 200
    power_replicates: int = 60
    contrast_replicates: int = 100
    accuracy_gaps: tuple[float, ...] = (0.05, 0.10, 0.15, 0.20, 0.30)
    concept_shifts: tuple[float, ...] = (0.2, 0.5, 0.75, 1.0, 1.5)
    n_boot: int = 200
    seed: int = 2026


FULL = StudyConfig()
QUICK = StudyConfig(coverage_sizes=(30, 100, 400), coverage_accuracies=(0.5, 0.99), coverage_replicates=30,
                    specific_sizes=(100,), gate_sizes=(100,), null_replicates=40, power_replicates=15, contrast_replicates=20,
                    accuracy_gaps=(0.10, 0.30), concept_shifts=(0.5, 1.5), n_boot=200)


def _map(function: Callable, tasks: list[tuple], workers: int, progress: Callable[[str], None] | None, label: str) -> list:
    """Run ``function(*task)`` for every task, in order, in ``workers`` processes (1: in this one)."""
    if progress:
        progress(f"{label}: {len(tasks)} audits")
    if workers <= 1:
        return [function(*t) for t in tasks]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_star, [(function, t) for t in tasks], chunksize=max(1, len(tasks) // (8 * workers))))


def _star(item: tuple) -> Any:
    function, args = item
    return function(*args)


def _coverage_task(cell: CoverageCell, replicate: int, seed: int, n_boot: int) -> Records:
    return coverage_replicate(cell, replicate, study_seed=seed, n_boot=n_boot)


def _specific_task(size: int, replicate: int, seed: int, n_boot: int) -> Records:
    return specific_coverage_replicate(size, replicate, study_seed=seed, n_boot=n_boot)


def _gate_task(world: GateWorld, replicate: int, seed: int, n_boot: int, families: tuple[CheckFamily, ...],
               with_controls: bool | None = None) -> dict:
    return gate_replicate(world, replicate, study_seed=seed, n_boot=n_boot, families=families, with_controls=with_controls)


def run_coverage(config: StudyConfig, *, workers: int = 1, progress=None) -> dict[str, Any]:
    cells = [CoverageCell(n, p) for n in config.coverage_sizes for p in config.coverage_accuracies]
    tasks = [(cell, r, config.seed, config.n_boot) for cell in cells for r in range(config.coverage_replicates)]
    outputs = _map(_coverage_task, tasks, workers, progress, "coverage")
    pooled: dict[tuple, list] = defaultdict(list)
    for (cell, _, _, _), records in zip(tasks, outputs):
        for quantity, rs in records.items():
            if quantity.startswith("skew"):
                # Skew does not depend on accuracy: pool a size's cells.
                pooled[(quantity, cell.group_size, None)].extend(rs)
            else:
                pooled[(quantity, cell.group_size, cell.accuracy)].extend(rs)
    out = {"accuracy_cells": [], "skew_cells": [], "specific_cells": []}
    for cell in cells:
        row = {"group_size": cell.group_size, "p": cell.accuracy, "p_lower": cell.lower_accuracy}
        for quantity in ("accuracy", "accuracy_lower", "difference_zero", "difference_gap"):
            row[quantity] = summarise_intervals(pooled[(quantity, cell.group_size, cell.accuracy)])
        n, p, p_c = cell.group_size, cell.accuracy, cell.lower_accuracy
        row["exact"] = {"wilson_p": exact_coverage(n, p), "wilson_p_lower": exact_coverage(n, p_c),
                        "newcombe_zero": exact_coverage(n, p, p), "newcombe_gap": exact_coverage(n, p_c, p)}
        out["accuracy_cells"].append(row)
    for n in config.coverage_sizes:
        row = {"group_size": n, "k": depth_k(3 * n)}
        for quantity in ("skew_null", "skew_planted"):
            row[quantity] = summarise_intervals(pooled[(quantity, n, None)])
        out["skew_cells"].append(row)
    if "specific_skew" in engine_metrics():
        tasks = [(n, r, config.seed, config.n_boot) for n in config.specific_sizes for r in range(config.coverage_replicates)]
        outputs = _map(_specific_task, tasks, workers, progress, "specific-skew coverage")
        by_size: dict[tuple, list] = defaultdict(list)
        for (n, *_), records in zip(tasks, outputs):
            for quantity, rs in records.items():
                by_size[(quantity, n)].extend(rs)
        for n in config.specific_sizes:
            out["specific_cells"].append({"group_size": n, "k": depth_k(2 * n),
                                          **{q: summarise_intervals(by_size[(q, n)]) for q in ("specific_null", "specific_planted")}})
    else:
        out["specific_missing"] = "the engine has no specific_skew metric yet"
    return out


def null_worlds(config: StudyConfig) -> list[GateWorld]:
    worlds = []
    for n in config.gate_sizes:
        worlds.append(GateWorld("no_bias", n))
        worlds.append(GateWorld("sorts_by_group", n, dominance=DOMINANCE_SHIFT))
    return worlds


def run_gate(config: StudyConfig, *, workers: int = 1, progress=None) -> dict[str, Any]:
    families, missing = active_families()
    families = tuple(families)
    nulls = null_worlds(config)
    tasks = [(w, r, config.seed, config.n_boot, families) for w in nulls for r in range(config.null_replicates)]
    power_worlds = []
    for n in config.gate_sizes:
        for gap, shift in zip(config.accuracy_gaps, config.concept_shifts):
            power_worlds.append(GateWorld("planted", n, accuracy_gap=gap, concept_shift=shift))
    tasks += [(w, r, config.seed, config.n_boot, families) for w in power_worlds for r in range(config.power_replicates)]
    outputs = _map(_gate_task, tasks, workers, progress, "gate (false fails and power)")
    by_world: dict[GateWorld, list] = defaultdict(list)
    for (world, *_), outcome in zip(tasks, outputs):
        by_world[world].append(outcome)
    false_fail = [summarise_gate(w, by_world[w], families) for w in nulls]
    power = []
    for n in config.gate_sizes:
        # Effect 0 of the power curve is the no-bias world above (same design, more replicates).
        curve = [summarise_gate(w, by_world[w], families) for w in nulls if w.group_size == n and w.name == "no_bias"]
        curve += [summarise_gate(w, by_world[w], families) for w in power_worlds if w.group_size == n]
        power.append({"group_size": n, "points": curve})
    # Contrast: the same null data sets judged by the plain MaxSkew concept check (the gate
    # before prompt-specific skew), when the engine has the specific check to compare with.
    contrast = []
    if any(f.metric == "specific_max_skew" for f in families):
        plain = (CHECK_FAMILIES[0], STAND_INS["concept"])
        tasks = [(w, r, config.seed, config.n_boot, plain, False) for w in nulls for r in range(config.contrast_replicates)]
        outputs = _map(_gate_task, tasks, workers, progress, "contrast: plain MaxSkew concept check")
        by_null: dict[GateWorld, list] = defaultdict(list)
        for (world, *_), outcome in zip(tasks, outputs):
            by_null[world].append(outcome)
        contrast = [summarise_gate(w, by_null[w], plain) for w in nulls]
    return {
        "families": [{"name": f.name, "metric": f.metric, "description": f.description} for f in families],
        "missing_metrics": missing,
        "false_fail": false_fail,
        "power": power,
        "contrast_plain_max_skew": contrast,
    }


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished worker processes."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_study(config: StudyConfig, *, workers: int = 1, progress=None) -> dict[str, Any]:
    started, cpu_started = time.time(), _cpu_seconds()
    coverage = run_coverage(config, workers=workers, progress=progress)
    coverage_seconds = time.time() - started
    gate = run_gate(config, workers=workers, progress=progress)
    return {
        "phase_seconds": {"coverage": round(coverage_seconds, 1), "gate": round(time.time() - started - coverage_seconds, 1)},
        "config": asdict(config),
        "coverage": coverage,
        "gate": gate,
        "conventions": _engine_conventions(),
        "targets": {"coverage_at_least": COVERAGE_TARGET, "false_fail_at_most": FALSE_FAIL_TARGET, "level": LEVEL},
        "thresholds": {"accuracy_gap": [ACCURACY_GAP_WARN, ACCURACY_GAP_FAIL], "skew": [SKEW_WARN, SKEW_FAIL],
                       "group_dominance": [DOMINANCE_WARN, DOMINANCE_FAIL], "alpha": ALPHA},
        "design": {"planted_shift_coverage": COVERAGE_PLANTED_SHIFT, "dominance_shift": DOMINANCE_SHIFT,
                   "default_accuracy": DEFAULT_ACCURACY, "lower_accuracy": {str(k): v for k, v in LOWER_ACCURACY.items()},
                   "k": "min(100, N // 4), N = all images"},
        "seconds": round(time.time() - started, 1),
        # CPU time is what a quiet machine would need (divided by the workers): wall time on a
        # shared machine mostly measures the other jobs.
        "cpu_seconds": round(_cpu_seconds() - cpu_started, 1),
    }


def _engine_conventions() -> dict[str, Any]:
    """What the engine says about its intervals (summary["conventions"] of a small audit)."""
    sim = simulate_audit_inputs({"a": 40, "b": 40}, {ROLE: ModelBehaviour()}, seed=0, attribute=ATTRIBUTE)
    audit = run_audit_on(sim, study_spec(sim, k=20, checks=[], n_boot=20, seed=0), n_boot=20, seed=0)
    return {"conventions": audit.summary.get("conventions", {}),
            "interval": audit.summary.get("bootstrap", {}).get("interval", "")}


# ---------------------------------------------------------------------------------------
# the report


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def coverage_status(s: Mapping[str, Any]) -> str:
    """``meets``; ``below``: the whole Wilson interval of the coverage estimate is under the
    target; ``noise``: the estimate is under the target but its interval reaches it (with a
    few hundred replicates an interval whose true coverage is 93.5% reads below 93% often)."""
    if s["coverage"] >= COVERAGE_TARGET:
        return "meets"
    return "below" if s["coverage_ci"][1] < COVERAGE_TARGET else "noise"


def _coverage_cell(s: Mapping[str, Any]) -> str:
    mark = {"meets": "", "below": " **(below)**", "noise": " (under 93%, within noise)"}[coverage_status(s)]
    return f"{_pct(s['coverage'])} [{_pct(s['coverage_ci'][0])}, {_pct(s['coverage_ci'][1])}]{mark}"


def coverage_shortfalls(coverage: Mapping[str, Any]) -> list[str]:
    """One line per cell whose estimate is under the target, with what its misses look like."""
    lines = []
    names = {"accuracy": "accuracy", "accuracy_lower": "accuracy (lower group)", "difference_zero": "accuracy difference (true 0)",
             "difference_gap": "accuracy difference (true gap)", "skew_null": "Skew@k, no association",
             "skew_planted": "Skew@k, planted association", "specific_null": "specific skew, no association",
             "specific_planted": "specific skew, planted association"}
    for row in coverage["accuracy_cells"] + coverage["skew_cells"] + coverage.get("specific_cells", []):
        for key, s in row.items():
            if isinstance(s, dict) and "coverage" in s and s["coverage"] < COVERAGE_TARGET:
                where = f"n={row['group_size']}" + (f", p={row['p']}" if "p" in row else f", k={row['k']}")
                why = []
                if s["zero_width"] > 0.01:
                    why.append(f"{_pct(s['zero_width'])} of intervals have zero width")
                if s["missing"] > 0:
                    why.append(f"{_pct(s['missing'])} have no interval")
                why.append(f"the interval lies above the truth in {_pct(s['interval_above_truth'])} and below it in "
                           f"{_pct(s['interval_below_truth'])} of replicates")
                verdict = ("below the target: the whole interval of the estimate is under it" if coverage_status(s) == "below"
                           else "under the target within the replicates' noise (its interval reaches the target)")
                lines.append(f"- {names.get(key, key)} at {where}: {_pct(s['coverage'])} "
                             f"[{_pct(s['coverage_ci'][0])}, {_pct(s['coverage_ci'][1])}], {verdict}; {'; '.join(why)}.")
    return lines


_QUANTITY_NAMES = {
    "accuracy": "accuracy", "accuracy_lower": "accuracy", "difference_zero": "accuracy difference",
    "difference_gap": "accuracy difference", "skew_null": "Skew@k", "skew_planted": "Skew@k",
    "specific_null": "specific skew", "specific_planted": "specific skew",
}


def headline(study: Mapping[str, Any]) -> list[str]:
    """The study's answers in a few bullets, computed from its numbers."""
    cov, gate = study["coverage"], study["gate"]
    lowest: dict[str, tuple[float, str, Mapping[str, Any]]] = {}
    for row in cov["accuracy_cells"] + cov["skew_cells"] + cov.get("specific_cells", []):
        where = f"n={row['group_size']}" + (f", p={row['p']}" if "p" in row else f", k={row['k']}")
        for key, s in row.items():
            if isinstance(s, Mapping) and "coverage" in s:
                name = _QUANTITY_NAMES.get(key, key)
                if name not in lowest or s["coverage"] < lowest[name][0]:
                    lowest[name] = (s["coverage"], where, s)
    lines = []
    for name, (value, where, s) in lowest.items():
        status = {"meets": "meets the target", "noise": "under 93% only within the replicates' noise",
                  "below": "**below the target**"}[coverage_status(s)]
        lines.append(f"- Coverage of {name}: lowest cell {_pct(value)} [{_pct(s['coverage_ci'][0])}, "
                     f"{_pct(s['coverage_ci'][1])}] at {where} ({status}).")
    judged = []
    for summary in gate["false_fail"]:
        for fam_name, fam in summary["families"].items():
            if not fam["should_fire"]:
                judged.append((fam["fail"]["rate"], f"{fam_name} in {summary['world']['name']}, n={summary['world']['group_size']}"))
    if judged:
        worst = max(judged)
        overall = max(s["false_fail_overall"]["rate"] for s in gate["false_fail"])
        lines.append(f"- False fails without planted bias: at most {_pct(worst[0])} for any family ({worst[1]}); "
                     f"overall after Holm at most {_pct(overall)} (target {_pct(FALSE_FAIL_TARGET)}).")
    fired = [(s["families"][f]["fail"]["rate"], s["world"]["group_size"]) for s in gate["false_fail"]
             for f in s["families"] if s["families"][f]["should_fire"]]
    concept_dom = [s["families"].get("concept", {}).get("fail", {}).get("rate") for s in gate["false_fail"]
                   if s["world"]["name"] == "sorts_by_group"]
    plain_dom = [s["families"]["concept"]["fail"]["rate"] for s in gate.get("contrast_plain_max_skew", [])
                 if s["world"]["name"] == "sorts_by_group"]
    if fired:
        text = (f"- A model that ranks every prompt by group: the group-dominance check fails it in "
                f"{_pct(min(r for r, _ in fired))}-{_pct(max(r for r, _ in fired))} of data sets")
        if concept_dom:
            text += f", the concept checks in {_pct(max(c for c in concept_dom if c is not None))} at most"
        if plain_dom:
            text += f" (the plain MaxSkew check it replaces: {_pct(min(plain_dom))}-{_pct(max(plain_dom))})"
        lines.append(text + ".")
    for curve in gate["power"]:
        accuracy_at = next((p["world"]["accuracy_gap"] for p in curve["points"] if p["accuracy_fail"]["rate"] >= 0.8), None)
        concept_at = next((p for p in curve["points"] if p["planted_prompt_fail"]["rate"] >= 0.8), None)
        accuracy_text = (f"the accuracy check fails at least 80% of data sets from a true gap of {accuracy_at:.2f}"
                         if accuracy_at is not None else "the accuracy check stays under 80% at every gap tried")
        concept_text = (f"the concept check from a planted shift of {concept_at['world']['concept_shift']:.2f} SD (true "
                        f"specific MaxSkew {concept_at['true_concept_specific_max_skew']:.2f}; fail threshold {SKEW_FAIL})"
                        if concept_at else "the concept check stays under 80% at every shift tried")
        lines.append(f"- Power, n={curve['group_size']} per group: {accuracy_text} (fail threshold {ACCURACY_GAP_FAIL}); "
                     f"{concept_text}.")
    return lines


def render_baseline(baseline: Mapping[str, Any]) -> list[str]:
    """The accuracy coverage of an earlier engine, from its saved study JSON, for comparison."""
    cells = baseline.get("coverage", {}).get("accuracy_cells", [])
    if not cells:
        return []
    lines = [
        "",
        f"For comparison, the same cells on the engine before the edge-safe intervals ({baseline.get('what', '')};",
        f"`{baseline.get('command', '')}`, {baseline.get('machine', {}).get('date', '')}, "
        f"{baseline.get('config', {}).get('coverage_replicates', '?')} replicates per cell):",
        "",
        "| n per group | p | accuracy (a, b) | accuracy of c | difference b - a | difference c - a | zero-width accuracy intervals |",
        "|---:|---:|---|---|---|---|---:|",
    ]
    for row in cells:
        lines.append(
            f"| {row['group_size']} | {row['p']} | {_coverage_cell(row['accuracy'])} | {_coverage_cell(row['accuracy_lower'])} | "
            f"{_coverage_cell(row['difference_zero'])} | {_coverage_cell(row['difference_gap'])} | {_pct(row['accuracy']['zero_width'])} |"
        )
    return lines


def render_markdown(study: Mapping[str, Any], *, command: str, machine: Mapping[str, Any],
                    baseline: Mapping[str, Any] | None = None) -> str:
    cfg = study["config"]
    cov = study["coverage"]
    gate = study["gate"]
    conv = study["conventions"]
    lines = [
        "# Validity of the audit's statistics",
        "",
        "Simulated data with a known truth (`workbench/audit/simulate.py`: per-group zero-shot accuracy, prompts",
        "whose rankings are independent of group or planted to favour one, a model that ranks everything by",
        "group), audited by the product itself (`compute_audit`, its results table and its policy verdicts).",
        "Rerun with one command (same seed, same numbers):",
        "",
        "```bash",
        command,
        "```",
        "",
        f"_Run {machine['date']}, {study['seconds']:.0f} s on {machine['cpu_count']} CPU(s) ({machine['processor']}), "
        f"load average {machine['load_average']}, {machine['workers']} worker process(es), Python {machine['python']}; "
        f"engine at {machine.get('engine', 'unknown')}._",
        "",
        f"Bootstrap resamples per audit: **n_boot = {cfg['n_boot']}**. Replicates: coverage {cfg['coverage_replicates']} "
        f"data sets per cell, null worlds {cfg['null_replicates']}, power points {cfg['power_replicates']}, plain-MaxSkew "
        f"contrast {cfg.get('contrast_replicates', cfg['null_replicates'])}. "
        f"Time: coverage {study.get('phase_seconds', {}).get('coverage', '?')} s, gate {study.get('phase_seconds', {}).get('gate', '?')} s"
        + (f", CPU time {study['cpu_seconds']:.0f} s in all. " if study.get("cpu_seconds") is not None else ". ")
        + f"Every rate below carries its own 95% Wilson interval. Study seed {cfg['seed']}.",
        "",
        "Intervals as the engine reports them (`summary.json`):",
        "",
    ]
    for key, text in sorted((conv.get("conventions") or {}).items()):
        if isinstance(text, Mapping):
            for metric, how in text.items():
                lines.append(f"- `{key}.{metric}`: {how}")
        elif any(word in key for word in ("interval", "accuracy", "skew", "specific", "dominance", "difference", "p_values")):
            lines.append(f"- `{key}`: {text}")
    if conv.get("interval"):
        lines.append(f"- bootstrap `interval`: {conv['interval']}")
    lines += ["", "## Answers", ""] + headline(study)
    lines += [
        "",
        "## (a) Coverage of the 95% intervals",
        "",
        f"Target: at least {_pct(COVERAGE_TARGET)} in every cell. Each data set has three groups of n images:",
        "`a` (the reference) and `b` at accuracy p, `c` at a lower accuracy; the true accuracy difference is",
        "0 for b - a and negative for c - a. Zero-shot correctness is Binomial(n, p) per group by construction",
        "(two classes).",
        "",
        "Each cell: the audit's coverage [its 95% Wilson interval] over the replicates; in parentheses the exact",
        "coverage of the Wilson (edge-corrected) / Newcombe interval by binomial enumeration, which the audit's",
        "number should match within its interval when the engine reports those intervals.",
        "",
        "| n per group | p | accuracy (a, b) | accuracy of c (p_c) | difference b - a (true 0) | difference c - a | mean width, accuracy |",
        "|---:|---:|---|---|---|---|---:|",
    ]
    for row in cov["accuracy_cells"]:
        exact = row.get("exact", {})
        lines.append(
            f"| {row['group_size']} | {row['p']} | {_coverage_cell(row['accuracy'])} ({_pct(exact.get('wilson_p'))}) | "
            f"{_coverage_cell(row['accuracy_lower'])} (p_c={row['p_lower']}; {_pct(exact.get('wilson_p_lower'))}) | "
            f"{_coverage_cell(row['difference_zero'])} ({_pct(exact.get('newcombe_zero'))}) | "
            f"{_coverage_cell(row['difference_gap'])} ({_pct(exact.get('newcombe_gap'))}) | {row['accuracy']['mean_width']:.3f} |"
        )
    if baseline:
        lines += render_baseline(baseline)
    lines += [
        "",
        f"Skew@k (target uniform; k = min(100, N/4) with N = 3n images). One prompt with no association (true",
        f"Skew 0 for every group) and one favouring group `a` by {COVERAGE_PLANTED_SHIFT} noise SD (true Skew from the",
        "normal-mixture population at depth k/N). Coverage pooled over the three groups and the accuracy cells.",
        "",
        "| n per group | k | Skew@k, no association | Skew@k, planted | mean width (no association) |",
        "|---:|---:|---|---|---:|",
    ]
    for row in cov["skew_cells"]:
        lines.append(f"| {row['group_size']} | {row['k']} | {_coverage_cell(row['skew_null'])} | "
                     f"{_coverage_cell(row['skew_planted'])} | {row['skew_null']['mean_width']:.3f} |")
    if cov.get("specific_cells"):
        lines += [
            "",
            f"Specific skew (prompt minus control panel of 20), in a model that ranks every prompt by group",
            f"(shift {DOMINANCE_SHIFT} SD for group a on every prompt); true specific skew 0 for the unplanted prompt.",
            "",
            "| n per group | k | specific skew, no association | specific skew, planted | mean width |",
            "|---:|---:|---|---|---:|",
        ]
        for row in cov["specific_cells"]:
            lines.append(f"| {row['group_size']} | {row['k']} | {_coverage_cell(row['specific_null'])} | "
                         f"{_coverage_cell(row['specific_planted'])} | {row['specific_null']['mean_width']:.3f} |")
    else:
        lines += ["", f"Specific skew: not measured ({cov.get('specific_missing', 'not available')})."]
    shortfalls = coverage_shortfalls(cov)
    lines += ["", "**Cells whose estimate is under the target:**" if shortfalls else f"**Every cell meets the {_pct(COVERAGE_TARGET)} target.**"]
    lines += shortfalls
    lines += [
        "",
        "## (b) False fails on data with no planted bias",
        "",
        f"Target: at most {_pct(FALSE_FAIL_TARGET)} per family and overall (Holm over every check of the audit, alpha {ALPHA}).",
        "Two groups of n images at accuracy 0.9, three neutral prompts. Checks: "
        + "; ".join(f"**{f['name']}** = `{f['metric']}` ({f['description']})" for f in gate["families"])
        + f". Thresholds: accuracy gap warn {ACCURACY_GAP_WARN} / fail {ACCURACY_GAP_FAIL}; skew warn {SKEW_WARN} / fail"
          f" {SKEW_FAIL}; group dominance warn {DOMINANCE_WARN} / fail {DOMINANCE_FAIL}.",
        "",
    ]
    if gate["missing_metrics"]:
        lines += [f"Not yet in the engine, so not measured: {', '.join('`' + m + '`' for m in gate['missing_metrics'])}.", ""]
    header = "| world | n per group | " + " | ".join(f"{f['name']} fails" for f in gate["families"]) + " | overall false fail |"
    lines += [header, "|---|---:|" + "---|" * (len(gate["families"]) + 1)]
    for s in gate["false_fail"]:
        cells = []
        for f in gate["families"]:
            fam = s["families"][f["name"]]
            text = f"{_pct(fam['fail']['rate'])} [{_pct(fam['fail']['ci'][0])}, {_pct(fam['fail']['ci'][1])}]"
            if fam["should_fire"]:
                text += " (correct detection)"
            elif fam["fail"]["rate"] > FALSE_FAIL_TARGET:
                text += " **(above)**"
            cells.append(text)
        overall = s["false_fail_overall"]
        mark = " **(above)**" if overall["rate"] > FALSE_FAIL_TARGET else ""
        lines.append(f"| {s['world']['name']} | {s['world']['group_size']} | " + " | ".join(cells)
                     + f" | {_pct(overall['rate'])} [{_pct(overall['ci'][0])}, {_pct(overall['ci'][1])}]{mark} |")
    lines += [
        "",
        "`no_bias`: groups treated alike. `sorts_by_group`: every prompt, controls included, shifts group a",
        f"up by {DOMINANCE_SHIFT} noise SD; no prompt is associated with a group beyond that, so a concept check",
        "failing there is a false fail, and the group-dominance check failing is the right answer.",
        "The overall column counts any failing check outside the family that should fire.",
        "",
    ]
    if gate.get("contrast_plain_max_skew"):
        lines += [
            "The same data sets judged by the plain MaxSkew@k concept check (what the gate used before the",
            "prompt-specific check; same thresholds):",
            "",
            "| world | n per group | plain MaxSkew concept check fails |",
            "|---|---:|---|",
        ]
        for s in gate["contrast_plain_max_skew"]:
            fam = s["families"]["concept"]["fail"]
            lines.append(f"| {s['world']['name']} | {s['world']['group_size']} | {_pct(fam['rate'])} "
                         f"[{_pct(fam['ci'][0])}, {_pct(fam['ci'][1])}] |")
        lines.append("")
    lines += [
        "## (c) Power against planted effect size",
        "",
        f"Two groups of n images. Group b's accuracy is 0.9 minus the planted gap; the planted prompt favours",
        "group a by the planted shift (noise SD units), shown with the true value of the concept metric.",
        "Effect 0 is the no-bias world of (b). 'CI above 0' is read on the favoured group's signed specific",
        "skew row (a maximum over groups is never below 0, so its interval is not the one to read for this).",
        "",
    ]
    for curve in gate["power"]:
        lines += [
            f"**n = {curve['group_size']} per group** (k = {curve['points'][0]['k'] if curve['points'] else '?'})",
            "",
            "| accuracy gap | accuracy check fails | difference CI excludes 0 | concept shift (SD) | true specific MaxSkew | "
            "concept check fails (planted prompt) | group a's specific skew: CI above 0 |",
            "|---:|---|---|---:|---:|---|---|",
        ]
        for p in curve["points"]:
            w = p["world"]
            lines.append(
                f"| {w['accuracy_gap']:.2f} | {_pct(p['accuracy_fail']['rate'])} | {_pct(p['difference_excludes_zero']['rate'])} | "
                f"{w['concept_shift']:.2f} | {p['true_concept_specific_max_skew']:.3f} | {_pct(p['planted_prompt_fail']['rate'])} | "
                f"{_pct(p['concept_excludes_zero']['rate'])} |"
            )
        lines.append("")
    lines += [
        "## How this is computed",
        "",
        "- Data: `simulate_audit_inputs` builds image and text embeddings whose zero-shot predictions and prompt",
        "  scores follow the design exactly (orthogonal class and prompt directions; a filler coordinate makes",
        "  every image the same norm, so scores are the designed values up to one constant). True values:",
        "  accuracy p; Skew@k as the population value at depth k/N of a normal mixture with the design's",
        "  shifts; specific skew as that minus the control panel's mean.",
        "- Coverage counts a replicate as covered when ci_low <= truth <= ci_high (1e-9 tolerance for exact zeros);",
        "  the rows are the ones `compute_audit` reports.",
        "- A check 'fails' when the policy's verdict is `fail`: estimate beyond the fail threshold and the one-sided",
        "  test beyond warn significant after Holm over all the audit's checks.",
        f"- `bench/validity.py --quick` runs a smaller version; `tests/test_validity.py` a CI version whose tolerance",
        "  is set by the binomial error of its replicate count, plus a check that a deliberately broken interval",
        "  (percentile bootstrap at p = 0.99, n = 30) is caught.",
        "",
    ]
    return "\n".join(lines)


def engine_revision() -> str:
    """The commit the engine was loaded from, naming any audit file with uncommitted changes."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "workbench/audit", "workbench/schema.py"], cwd=REPO,
                                capture_output=True, text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    if not head:
        return "unknown (not a git checkout)"
    dirty = [line[3:] for line in status if line.strip()]
    return head + (f" with uncommitted changes in {', '.join(dirty)}" if dirty else "")


def machine_facts(workers: int) -> dict[str, Any]:
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "engine": engine_revision(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "load_average": load,
        "workers": workers,
    }


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return _json_safe(obj.item())
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small version (about a minute): fewer sizes and replicates")
    parser.add_argument("--workers", type=int, default=1, help="processes to run replicates in (default 1)")
    parser.add_argument("--markdown", default=None,
                        help="markdown report to write (default VALIDITY.md; bench/results/validity-quick.md with --quick)")
    parser.add_argument("--output", default=None,
                        help="JSON to write (default bench/results/validity.json; validity-quick.json with --quick)")
    parser.add_argument("--baseline", default=None,
                        help=f"an earlier study JSON whose accuracy coverage is shown for comparison (default "
                             f"{BASELINE.relative_to(REPO)} when it exists, not with --quick)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    from workbench.io import atomic_write_json, atomic_write_text

    config = QUICK if args.quick else FULL
    markdown = Path(args.markdown) if args.markdown else (REPO / "bench/results/validity-quick.md" if args.quick else REPO / "VALIDITY.md")
    output = Path(args.output) if args.output else REPO / ("bench/results/validity-quick.json" if args.quick else "bench/results/validity.json")
    command = ".venv/bin/python bench/validity.py" + (" --quick" if args.quick else "") + (
        f" --workers {args.workers}" if args.workers != 1 else "")

    def progress(message: str) -> None:
        print(f"[validity] {message}", file=sys.stderr, flush=True)

    baseline_path = Path(args.baseline) if args.baseline else (None if args.quick else BASELINE)
    baseline = None
    if args.baseline and not baseline_path.is_file():
        parser.error(f"--baseline {args.baseline}: no such file")
    if baseline_path is not None and baseline_path.is_file():
        baseline = json.loads(baseline_path.read_text(encoding="utf-8"))
    # The engine's revision as loaded now (worker processes fork from this one, so a commit
    # made while the study runs does not change the code it measures).
    started = machine_facts(args.workers)
    study = run_study(config, workers=args.workers, progress=progress)
    machine = {**machine_facts(args.workers), "engine": started["engine"], "date": started["date"]}
    study = _json_safe({**study, "machine": machine, "command": command})
    atomic_write_json(output, study)
    atomic_write_text(markdown, render_markdown(study, command=command, machine=machine, baseline=baseline))
    progress(f"wrote {markdown} and {output} in {study['seconds']:.0f} s")
    print(json.dumps({"markdown": str(markdown), "output": str(output), "seconds": study["seconds"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Read run folders and audit results from disk, tolerating every way they can be broken.

The dashboard and the exported report both read through this module, so a run that
the app lists as broken is refused by the report command for the same reason.
Nothing here loads a model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from workbench import schema
from workbench.report.verdict import Verdict, read_verdict

PREDICTIONS_FILE = schema.PREDICTIONS_FILE  # model, row, label, predicted, <group columns>
MIN_GROUP_SIZE_KEYS = ("min_group_size", "min_group_n", "min_n")
# Summary versions this reader understands: 1 predates the verdict contract (its candidate, headline
# and sentences are derived by workbench.report.verdict), 2 carries them.
READABLE_SCHEMA_VERSIONS = frozenset({1, 2, schema.RESULTS_SCHEMA_VERSION})


class ResultsError(ValueError):
    """An audit results folder that cannot be read; the message names the file and the fix."""


@dataclass(frozen=True)
class AuditResults:
    """One audit of one run: the long results table, its summary and the optional rankings."""

    name: str
    folder: Path
    table: pd.DataFrame
    summary: dict[str, Any]
    rankings: pd.DataFrame | None = None
    predictions: pd.DataFrame | None = None

    @cached_property
    def verdict(self) -> Verdict:
        """The candidate's verdict, its checks, the reference's checks as context (see report.verdict)."""
        return read_verdict(self.summary, self.table)

    @property
    def roles(self) -> list[str]:
        """Model roles with their own rows (``delta`` excluded), base first, tuned second."""
        present = [r for r in self.table["model"].unique().tolist() if r != "delta"]
        order = {"base": 0, "tuned": 1}
        return sorted(present, key=lambda r: (order.get(r, 2), r))

    @property
    def compares(self) -> bool:
        """True when both the base and the fine-tuned model were audited."""
        roles = self.roles
        return "base" in roles and "tuned" in roles

    @property
    def attribute_order(self) -> list[str]:
        """Attributes in the order the audit definition lists them."""
        groups = self.summary.get("groups")
        if isinstance(groups, dict):
            return [str(a) for a in groups]
        spec_attrs = (self.summary.get("spec") or {}).get("attributes") or []
        return [a.get("column", "") if isinstance(a, dict) else str(a) for a in spec_attrs]

    def reference_group(self, attribute: str) -> str | None:
        """The reference group the audit measured differences and ratios against, when recorded."""
        entry = (self.summary.get("groups") or {}).get(attribute)
        if isinstance(entry, dict) and entry.get("reference") is not None:
            return str(entry["reference"])
        return None

    @property
    def min_group_size(self) -> int | None:
        spec = self.summary.get("spec") or {}
        for source in (spec, spec.get("policy") or {}, self.summary):
            if isinstance(source, dict):
                for key in MIN_GROUP_SIZE_KEYS:
                    if isinstance(source.get(key), (int, float)) and not isinstance(source.get(key), bool):
                        return int(source[key])
        return None


@dataclass(frozen=True)
class AuditEntry:
    """An audit folder of a run: its results, or the reason they could not be read."""

    name: str
    folder: Path
    results: AuditResults | None
    problem: str | None


@dataclass(frozen=True)
class RunInfo:
    """What the dashboard and the report know about one run folder."""

    name: str
    folder: Path
    modified: float
    config: dict[str, Any] | None = None
    base_model: dict[str, Any] | None = None
    zeroshot: dict[str, Any] | None = None
    train_log: pd.DataFrame | None = None
    audits: tuple[AuditEntry, ...] = ()
    problems: tuple[str, ...] = field(default_factory=tuple)
    failed: str | None = None  # the error of a run that stopped (run_failed.json), None when it did not

    @property
    def readable_audits(self) -> list[AuditEntry]:
        return [a for a in self.audits if a.results is not None]

    @property
    def status(self) -> str:
        """One line for the run list: "ok" or the first reason something is missing or broken."""
        if self.failed is not None:
            return f"run failed: {self.failed}"
        if not self.audits:
            return "no audit results yet"
        broken = [a for a in self.audits if a.results is None]
        if broken and not self.readable_audits:
            return broken[0].problem or "unreadable"
        if broken:
            return f"{len(broken)} of {len(self.audits)} audits unreadable: {broken[0].problem}"
        return "ok"


# --- locating runs ---------------------------------------------------------------------------


def resolve_run(runs_root: str | os.PathLike, name: str) -> Path:
    """Return the folder of run ``name`` inside ``runs_root``; refuse anything that leaves it."""
    root = Path(runs_root).resolve()
    if not name or name in {".", ".."} or "/" in name or "\\" in name or "\x00" in name:
        raise ValueError(f"run name {name!r} is not a folder name inside {root}")
    folder = (root / name).resolve()
    if folder.parent != root:
        raise ValueError(f"run name {name!r} resolves outside {root}")
    if not folder.is_dir():
        raise ValueError(f"no run {name!r} in {root}")
    return folder


def _is_audit_folder(folder: Path) -> bool:
    return any((folder / f).exists() for f in (schema.SUMMARY_FILE, schema.RESULTS_FILE, schema.RESULTS_CSV))


def _looks_like_run(folder: Path) -> bool:
    markers = (schema.RUN_CONFIG_FILE, schema.RUN_BASE_FILE, schema.RUN_AUDIT_DIR, schema.RUN_TRAIN_LOG,
               schema.RUN_ZEROSHOT_FILE, schema.RUN_MODEL_DIR, schema.RUN_FAILED_FILE)
    return _is_audit_folder(folder) or any((folder / m).exists() for m in markers)


def run_modified_time(folder: Path) -> float:
    """Latest modification time of the files that make up a run's results (not its weights)."""
    times = [folder.stat().st_mtime]
    candidates = [folder / schema.RUN_CONFIG_FILE, folder / schema.RUN_TRAIN_LOG,
                  folder / schema.RUN_ZEROSHOT_FILE, folder / schema.SUMMARY_FILE,
                  folder / schema.RESULTS_FILE]
    audit_root = folder / schema.RUN_AUDIT_DIR
    if audit_root.is_dir():
        for sub in audit_root.iterdir():
            candidates += [sub / schema.SUMMARY_FILE, sub / schema.RESULTS_FILE]
    for path in candidates:
        try:
            times.append(path.stat().st_mtime)
        except OSError:
            pass
    return max(times)


def list_runs(runs_root: str | os.PathLike) -> list[str]:
    """Names of the run folders under ``runs_root``, newest first; [] when it does not exist."""
    root = Path(runs_root)
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and _looks_like_run(p)]
    runs.sort(key=lambda p: (run_modified_time(p), p.name), reverse=True)
    return [p.name for p in runs]


def audit_folders(run_folder: Path) -> list[Path]:
    """Audit result folders of a run: ``audit/<name>/``, or the folder itself when it holds results."""
    found = []
    audit_root = run_folder / schema.RUN_AUDIT_DIR
    if audit_root.is_dir():
        found = sorted(p for p in audit_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found and _is_audit_folder(run_folder):
        found = [run_folder]
    return found


def source_mtimes(run_folder: Path) -> tuple[tuple[str, int], ...]:
    """(path, mtime_ns) of every file the reader looks at; a cache key that changes when any does."""
    paths = [run_folder / schema.RUN_CONFIG_FILE, run_folder / schema.RUN_BASE_FILE,
             run_folder / schema.RUN_TRAIN_LOG, run_folder / schema.RUN_ZEROSHOT_FILE]
    for audit in audit_folders(run_folder):
        paths += [audit / f for f in (schema.SUMMARY_FILE, schema.RESULTS_FILE, schema.RESULTS_CSV,
                                      schema.RANKINGS_FILE, PREDICTIONS_FILE)]
    key = []
    for path in paths:
        try:
            key.append((str(path), path.stat().st_mtime_ns))
        except OSError:
            key.append((str(path), -1))
    return tuple(key)


# --- reading files -----------------------------------------------------------------------------


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ResultsError(f"{path}: not valid JSON (line {err.lineno}): rewrite it or re-run the step that wrote it") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ResultsError(f"{path}: cannot be read ({err})") from err
    if not isinstance(obj, dict):
        raise ResultsError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


def _normalise_table(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    missing = [c for c in schema.RESULT_COLUMNS if c not in table.columns]
    if missing:
        raise ResultsError(f"{path}: missing columns {', '.join(missing)}: written by an older "
                           f"workbench; re-run the audit")
    table = table.loc[:, list(schema.RESULT_COLUMNS)].copy()
    for col in ("model", "audit", "metric", "attribute", "group", "label", "prompt", "target", "status", "note"):
        table[col] = table[col].astype(object).where(table[col].notna(), "").astype(str)
    for col in ("value", "ci_low", "ci_high"):
        table[col] = pd.to_numeric(table[col], errors="coerce").astype(float)
    for col in ("k", "n"):
        table[col] = pd.to_numeric(table[col], errors="coerce").fillna(0).astype(int)
    return table.reset_index(drop=True)


def read_results_table(folder: Path) -> pd.DataFrame:
    """The long results table of an audit folder (parquet, or the CSV copy when only it exists)."""
    parquet, csv = folder / schema.RESULTS_FILE, folder / schema.RESULTS_CSV
    if parquet.exists():
        try:
            table = pd.read_parquet(parquet)
        except Exception as err:  # pyarrow raises several unrelated types for a damaged file
            raise ResultsError(f"{parquet}: corrupt or unreadable parquet ({type(err).__name__}): re-run the audit") from err
        path = parquet
    elif csv.exists():
        try:
            table = pd.read_csv(csv, keep_default_na=False, na_values=[""])
        except Exception as err:
            raise ResultsError(f"{csv}: unreadable CSV ({type(err).__name__}): re-run the audit") from err
        path = csv
    else:
        raise ResultsError(f"{folder}: no {schema.RESULTS_FILE}: the audit did not finish; re-run it")
    return _normalise_table(table, path)


def _read_optional_parquet(path: Path) -> tuple[pd.DataFrame | None, str | None]:
    if not path.exists():
        return None, None
    try:
        return pd.read_parquet(path), None
    except Exception as err:
        return None, f"{path}: corrupt or unreadable parquet ({type(err).__name__})"


def read_audit(folder: str | os.PathLike) -> AuditResults:
    """Read one audit folder; raise ResultsError naming the file and the fix when it is unusable."""
    folder = Path(folder)
    summary_path = folder / schema.SUMMARY_FILE
    if not summary_path.exists():
        raise ResultsError(f"{summary_path}: missing: the audit did not finish; re-run it")
    summary = _read_json_object(summary_path)
    version = summary.get("schema_version")
    if isinstance(version, bool) or version not in READABLE_SCHEMA_VERSIONS:
        readable = " or ".join(str(v) for v in sorted(READABLE_SCHEMA_VERSIONS))
        raise ResultsError(f"{summary_path}: results schema version {version!r}, this workbench reads "
                           f"version {readable}: re-run the audit with this workbench")
    table = read_results_table(folder)
    rankings, _ = _read_optional_parquet(folder / schema.RANKINGS_FILE)
    predictions, _ = _read_optional_parquet(folder / PREDICTIONS_FILE)
    name = str(summary.get("audit") or folder.name)
    return AuditResults(name=name, folder=folder, table=table, summary=summary,
                        rankings=rankings, predictions=predictions)


def read_train_log(path: Path) -> pd.DataFrame:
    """train_log.jsonl as a table; unparseable lines (a crash mid-write) are skipped."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                rows.append(obj)
    return pd.DataFrame(rows)


def read_run(folder: str | os.PathLike) -> RunInfo:
    """Everything readable about a run folder; problems are collected, never raised."""
    folder = Path(folder)
    problems: list[str] = []

    def optional_json(name: str) -> dict[str, Any] | None:
        path = folder / name
        if not path.exists():
            return None
        try:
            return _read_json_object(path)
        except ResultsError as err:
            problems.append(str(err))
            return None

    config = optional_json(schema.RUN_CONFIG_FILE)
    base_model = optional_json(schema.RUN_BASE_FILE)
    zeroshot = optional_json(schema.RUN_ZEROSHOT_FILE)
    train_log = None
    if (folder / schema.RUN_TRAIN_LOG).exists():
        try:
            train_log = read_train_log(folder / schema.RUN_TRAIN_LOG)
        except (OSError, UnicodeDecodeError) as err:
            problems.append(f"{folder / schema.RUN_TRAIN_LOG}: cannot be read ({err})")
    audits = []
    for audit_folder in audit_folders(folder):
        try:
            results = read_audit(audit_folder)
            audits.append(AuditEntry(results.name, audit_folder, results, None))
        except ResultsError as err:
            audits.append(AuditEntry(audit_folder.name, audit_folder, None, str(err)))
    failure = optional_json(schema.RUN_FAILED_FILE)
    failed = None if failure is None else str(failure.get("error") or "no reason recorded")
    return RunInfo(name=folder.name, folder=folder, modified=run_modified_time(folder), config=config,
                   base_model=base_model, zeroshot=zeroshot, train_log=train_log, audits=tuple(audits),
                   problems=tuple(problems), failed=failed)


"""The provenance of a run's numbers as (item, value) rows, for the dashboard and the report."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from workbench import schema
from workbench.report.results import AuditResults, RunInfo


def find_key(obj: Any, *keys: str) -> Any:
    """First value under any of ``keys`` in a nested dict, breadth first (audit specs nest freely)."""
    queue = deque([obj])
    while queue:
        item = queue.popleft()
        if isinstance(item, dict):
            for key in keys:
                if key in item and item[key] not in (None, "", [], {}):
                    return item[key]
            queue.extend(v for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            queue.extend(v for v in item if isinstance(v, (dict, list)))
    return None


def _text(value: Any) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def checkpoints(run: RunInfo) -> list[str]:
    folder = run.folder / schema.RUN_CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith("step_"))


def provenance_rows(run: RunInfo, audit: AuditResults | None) -> list[tuple[str, str]]:
    """Everything a reviewer needs to reproduce the numbers, one (item, value) pair a line."""
    rows: list[tuple[str, str]] = [("run", run.name)]
    if run.base_model:
        rows.append(("base model (training)", _text(run.base_model.get("model"))))
        rows.append(("base model revision", _text(run.base_model.get("revision"))))
    steps = checkpoints(run)
    if steps:
        rows.append(("checkpoints", f"{len(steps)}, latest {steps[-1]}"))
    if (run.folder / schema.RUN_MODEL_DIR).is_dir():
        rows.append(("fine-tuned model folder", str(run.folder / schema.RUN_MODEL_DIR)))
    if run.config:
        rows.append(("training seed", _text(find_key(run.config, "seed"))))
        rows.append(("trust_remote_code", _text(run.config.get("trust_remote_code", False))))
    if audit is None:
        return rows
    summary = audit.summary
    rows.append(("audit", _text(summary.get("audit"))))
    rows.append(("audit created", _text(summary.get("created"))))
    for role, model in (summary.get("models") or {}).items():
        if isinstance(model, dict):
            rows.append((f"{role} model", _text(model.get("model"))))
            rows.append((f"{role} fingerprint", _text(model.get("fingerprint"))))
    data = summary.get("data") or {}
    for key in ("source", "split", "fingerprint", "n"):
        rows.append((f"data {key}", _text(data.get(key))))
    spec = summary.get("spec") or {}
    rows.append(("prompts", _text(find_key(spec, "prompts", "neutral_prompts"))))
    rows.append(("templates", _text(find_key(spec, "templates"))))
    rows.append(("k", _text(find_key(spec, "k", "ks"))))
    rows.append(("target distribution", _text(find_key(spec, "target", "targets"))))
    rows.append(("minimum group size", _text(audit.min_group_size)))
    rows.append(("audit seed", _text(find_key(spec, "seed"))))
    boot = summary.get("bootstrap") or {}
    rows.append(("bootstrap resamples", _text(boot.get("n_boot"))))
    rows.append(("bootstrap seed", _text(boot.get("seed"))))
    rows.append(("bootstrap stratified by", _text(boot.get("stratified_by"))))
    rows.append(("statistical tests", _text(summary.get("n_tests"))))
    return rows

"""Read audit results and run folders; write the HTML review report and the model-card section."""

from __future__ import annotations

import os
from pathlib import Path

from workbench.io import atomic_write_text
from workbench.report.html_report import render_html
from workbench.report.model_card import render_model_card
from workbench.report.results import (
    AuditResults,
    ResultsError,
    RunInfo,
    list_runs,
    read_audit,
    read_run,
    resolve_run,
)

REPORT_DIR = "report"
HTML_FILE = "report.html"
MODEL_CARD_FILE = "model_card.md"

__all__ = ["AuditResults", "ResultsError", "RunInfo", "choose_audit", "list_runs", "read_audit", "read_run",
           "render_html", "render_model_card", "resolve_run", "write_report"]


def choose_audit(run: RunInfo, name: str | None = None) -> AuditResults:
    """The run's audit called ``name`` (or its only/newest readable one); ResultsError saying why not."""
    if not run.audits:
        raise ResultsError(f"{run.folder}: no audit results (expected audit/<name>/summary.json): audit the run first")
    if name is not None:
        for entry in run.audits:
            if name in (entry.name, entry.folder.name):
                if entry.results is None:
                    raise ResultsError(entry.problem or f"audit {name} unreadable")
                return entry.results
        raise ResultsError(f"{run.folder}: no audit named {name!r}; found {', '.join(a.name for a in run.audits)}")
    readable = run.readable_audits
    if not readable:
        raise ResultsError(run.audits[0].problem or f"{run.folder}: audit results unreadable")
    return max(readable, key=lambda a: str(a.results.summary.get("created", ""))).results


def write_report(run_folder: str | os.PathLike, *, audit: str | None = None,
                 out_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Write report.html and model_card.md (atomically) for one audit of a run; return their paths."""
    run = read_run(run_folder)
    results = choose_audit(run, audit)
    out = Path(out_dir) if out_dir is not None else Path(run_folder) / REPORT_DIR
    html_path, card_path = out / HTML_FILE, out / MODEL_CARD_FILE
    atomic_write_text(html_path, render_html(run, results))
    atomic_write_text(card_path, render_model_card(run, results))
    return html_path, card_path

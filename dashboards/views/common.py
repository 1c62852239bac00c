"""What every view shares: the cached run reader, the view context and small display helpers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from workbench.report.results import AuditResults, RunInfo, read_run, source_mtimes
from workbench.report.text import escape_md

VERDICT_COLORS = {"pass": "green", "warn": "orange", "fail": "red", "inconclusive": "gray"}
VERDICT_ICONS = {"pass": ":material/check_circle:", "warn": ":material/warning:", "fail": ":material/cancel:",
                 "inconclusive": ":material/help:"}


@st.cache_data(show_spinner=False, max_entries=64)
def _read_run_cached(folder: str, mtimes: tuple[tuple[str, int], ...]) -> RunInfo:
    # mtimes is only part of the cache key: a rewritten results file gives a new entry.
    return read_run(folder)


def load_run(folder: Path) -> RunInfo:
    """The run folder as read from disk, re-read whenever one of its files changes."""
    return _read_run_cached(str(folder), source_mtimes(folder))


@dataclass(frozen=True)
class ViewContext:
    runs_root: Path
    run: RunInfo
    audit: AuditResults | None
    attribute: str | None
    k: int | None


def md(text: object) -> str:
    """User-supplied text made safe for st.markdown and widget labels."""
    return escape_md(text)


def need_audit(ctx: ViewContext) -> bool:
    """Say why a view that needs audit results has nothing to show; True when it can go on."""
    if ctx.audit is not None:
        return True
    if ctx.run.failed is not None:
        st.error(f"Run **{md(ctx.run.name)}** failed and holds no model to audit: {md(ctx.run.failed)}")
        return False
    broken = [a for a in ctx.run.audits if a.results is None]
    if broken:
        st.error(f"The audit results of run **{md(ctx.run.name)}** cannot be read: {md(broken[0].problem)}")
    else:
        st.info(f"Run **{md(ctx.run.name)}** has no audit results yet. Audit it, then reload this page.")
    return False


def need_attribute(ctx: ViewContext) -> bool:
    if ctx.attribute:
        return True
    st.info("The audit results hold no per-group rows, so there is nothing to break down by attribute.")
    return False


def single_model_notice(ctx: ViewContext) -> None:
    roles = ctx.audit.roles if ctx.audit else []
    only = ", ".join(roles) or "no model"
    st.info(f"Only **{md(only)}** was audited in this run, so there is no base versus fine-tuned comparison "
            f"to show. Audit both models together to see the difference; the single model's values follow.")


"""The commands a recipe prints when it ends: each runnable exactly as printed, for any output folder."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

from workbench.train import FinetuneConfig

# Where runs go by default (runs/<recipe>-<strategy>-<time>) and where the dashboard looks by default.
DEFAULT_RUNS_ROOT = "runs"
# The audit a recipe generates from the data into the run folder (--audit auto on data other than the demo).
GENERATED_AUDIT_FILE = "audit.yaml"


def python_command() -> str:
    """How to call this interpreter from the current folder: ``.venv/bin/python`` when the
    user never activated the venv (the README's commands), ``python`` when PATH finds it."""
    exe = Path(sys.executable)
    found = shutil.which("python")
    if found and Path(found).resolve() == exe.resolve():
        return "python"
    try:
        return str(exe.relative_to(Path.cwd()))
    except ValueError:
        return str(exe)


def audit_split(config: FinetuneConfig) -> str:
    """The split the end-of-training audit reads: test, else validation, else train."""
    return config.test_split or config.validation_split or config.train_split


def audit_command(run_dir: str | os.PathLike, audit: str, config: FinetuneConfig, *, held_out: bool = False) -> list[str]:
    """``python -m workbench.audit`` for this run's data, naming only flags that differ from their defaults.

    ``held_out``: the audited split was carved from train (the data has none by that name);
    the command then carves it the same way.
    """
    cmd = [python_command(), "-m", "workbench.audit", "--model", str(run_dir), "--audit", audit,
           "--data", config.dataset, "--split", audit_split(config)]
    if held_out:
        cmd += ["--validation-fraction", f"{config.validation_fraction:g}", "--split-seed", str(config.seed)]
    cmd += _data_flags(config)
    if config.trust_remote_code:
        cmd += ["--trust-remote-code"]
    return cmd


def _data_flags(config: FinetuneConfig) -> list[str]:
    cmd = []
    if config.data_config:
        cmd += ["--data-config", config.data_config]
    if config.data_revision:
        cmd += ["--data-revision", config.data_revision]
    if config.image_column != "image":
        cmd += ["--image-column", config.image_column]
    if config.label_column and config.label_column != "label":
        cmd += ["--label-column", config.label_column]
    if config.caption_column != "caption":  # None (no captions) is written as ''
        cmd += ["--caption-column", config.caption_column or ""]
    if config.group_columns:
        cmd += ["--group-columns", *config.group_columns]
    return cmd


def init_command(run_dir: str | os.PathLike, config: FinetuneConfig, *, held_out: bool = False) -> list[str]:
    """``python -m workbench.audit init`` writing ``<run>/audit.yaml`` for this run's data and groups."""
    cmd = [python_command(), "-m", "workbench.audit", "init", "--data", config.dataset, "--split", audit_split(config)]
    if held_out:
        cmd += ["--validation-fraction", f"{config.validation_fraction:g}", "--split-seed", str(config.seed)]
    cmd += _data_flags(config)
    return cmd + ["--output", str(Path(run_dir) / GENERATED_AUDIT_FILE)]


def dashboard_command(run_dir: str | os.PathLike) -> list[str]:
    """``streamlit run dashboards/app.py``, pointed at the run's parent folder unless that is the default ``runs/``."""
    cmd = [python_command(), "-m", "streamlit", "run", "dashboards/app.py"]
    parent = Path(run_dir).parent
    if parent.resolve() != (Path.cwd() / DEFAULT_RUNS_ROOT).resolve():
        cmd += ["--", "--runs", str(parent)]
    return cmd


def next_steps(run_dir: str | os.PathLike, audit: str, config: FinetuneConfig, *, held_out: bool = False,
               suggest_init: bool = False) -> list[str]:
    """The commands to run after a fine-tune (printed by the recipes), runnable as printed.

    ``suggest_init``: no audit is known for this data; with group columns, the commands that
    write one for it and run it come first.
    """
    cmds = []
    if audit:
        cmds.append(audit_command(run_dir, audit, config, held_out=held_out))
    elif suggest_init and config.group_columns:
        cmds.append(init_command(run_dir, config, held_out=held_out))
        cmds.append(audit_command(run_dir, str(Path(run_dir) / GENERATED_AUDIT_FILE), config, held_out=held_out))
    cmds.append(dashboard_command(run_dir))
    return [shlex.join(c) for c in cmds]

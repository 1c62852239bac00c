"""The recipe layer: fine-tune, audit the result, say what happened and what to run next.

Every recipe's ``main`` is :func:`recipe_main`. Training (``workbench.train``) and auditing
(``workbench.audit``) do not know each other; this module runs one after the other.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from workbench import schema
from workbench.audit import run_audit
from workbench.seeds import SEEDS_CSV, SEEDS_DIR, SeedsError, format_spread, seed_spread, write_spread
from workbench.train import (
    FinetuneConfig,
    LossNotFinite,
    OutOfMemory,
    default_run_dir,
    finetune,
    parse_recipe_args,
    use_cpu_threads,
    validate_config,
)

# Where runs go by default (runs/<recipe>-<strategy>-<time>) and where the dashboard looks by default.
DEFAULT_RUNS_ROOT = "runs"


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


def audit_command(run_dir: str | os.PathLike, audit: str, config: FinetuneConfig) -> list[str]:
    """``python -m workbench.audit`` for this run's data, naming only flags that differ from their defaults."""
    cmd = [python_command(), "-m", "workbench.audit", "--model", str(run_dir), "--audit", audit,
           "--data", config.dataset, "--split", audit_split(config)]
    if config.data_config:
        cmd += ["--data-config", config.data_config]
    if config.data_revision:
        cmd += ["--data-revision", config.data_revision]
    if config.image_column != "image":
        cmd += ["--image-column", config.image_column]
    if config.label_column and config.label_column != "label":
        cmd += ["--label-column", config.label_column]
    if config.group_columns:
        cmd += ["--group-columns", *config.group_columns]
    if config.trust_remote_code:
        cmd += ["--trust-remote-code"]
    return cmd


def dashboard_command(run_dir: str | os.PathLike) -> list[str]:
    """``streamlit run dashboards/app.py``, pointed at the run's parent folder unless that is the default ``runs/``."""
    cmd = [python_command(), "-m", "streamlit", "run", "dashboards/app.py"]
    parent = Path(run_dir).parent
    if parent.resolve() != (Path.cwd() / DEFAULT_RUNS_ROOT).resolve():
        cmd += ["--", "--runs", str(parent)]
    return cmd


def next_steps(run_dir: str | os.PathLike, audit: str, config: FinetuneConfig) -> list[str]:
    """The commands to run after a fine-tune (printed by the recipes), runnable as printed."""
    cmds = [audit_command(run_dir, audit, config)] if audit else []
    cmds.append(dashboard_command(run_dir))
    return [shlex.join(c) for c in cmds]


def audit_run(run_dir: str | os.PathLike, config: FinetuneConfig):
    """Audit the run's base and tuned models side by side on :func:`audit_split`; writes ``<run>/audit/<name>/``."""
    return run_audit(
        config.audit, str(run_dir), config.dataset, split=audit_split(config), image_column=config.image_column,
        label_column=config.label_column or None, group_columns=list(config.group_columns) or None,
        data_revision=config.data_revision, data_config=config.data_config, trust_remote_code=config.trust_remote_code,
    )


def audit_headline(summary: dict) -> str:
    """The audit summary's one-sentence headline; ``audit verdict: <verdict>`` where the summary has none."""
    return summary.get("headline") or f"audit verdict: {summary.get('verdict')}"


def _recipe_default(config_cls: type, name: str):
    """The recipe's own default for field ``name`` (what the user gets without the flag)."""
    for f in dataclasses.fields(config_cls):
        if f.name == name:
            return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    raise KeyError(name)


def _on_cpu(config: FinetuneConfig) -> bool:
    return config.cpu or not torch.cuda.is_available()


def recipe_main(config_cls: type, argv: Sequence[str] | None, *, recipe: str) -> int:
    """What every recipe's ``main`` does: parse, fine-tune, audit, print the run folder and next commands.

    Bad input and training failures end with a one-line ``error:`` message and exit status 2 / 1.
    On CPU every available core is used, shared among this machine's processes, unless the
    user set a thread count (``--cpu-threads``, ``OMP_NUM_THREADS``). With ``--seeds N`` the
    run is repeated with N seeds and the between-run spread of every check is reported.
    """
    config = parse_recipe_args(config_cls, argv)
    try:
        validate_config(config)  # a bad flag fails here, before any set-up
        if _on_cpu(config):
            use_cpu_threads(config.cpu_threads)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if config.seeds > 1:
        return _recipe_seeds(config_cls, config, recipe=recipe)
    status, run_dir = _train_and_audit(config, recipe=recipe)
    if status or not PartialState().is_main_process:
        return status
    print(f"\nrun folder: {run_dir}")
    # With the audit skipped, the next step still shows the recipe's own audit.
    for cmd in next_steps(run_dir, config.audit or _recipe_default(config_cls, "audit"), config):
        print(f"next: {cmd}")
    return 0


def _train_and_audit(config: FinetuneConfig, *, recipe: str) -> tuple[int, Path | None]:
    """One fine-tuning run and its audit; (exit status, run folder)."""
    try:
        run_dir = finetune(config, recipe=recipe)
    except (LossNotFinite, OutOfMemory) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1, None
    except ValueError as err:  # DataError, ModelLoadError and config problems are ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 2, None
    if config.audit and PartialState().is_main_process:
        try:
            result = audit_run(run_dir, config)
        except (ValueError, FileNotFoundError) as err:  # the run itself is complete and kept
            print(f"audit not run: {err}", file=sys.stderr)
        else:
            print(audit_headline(result.summary))
            print(f"audit written to {Path(run_dir) / schema.RUN_AUDIT_DIR / result.summary['audit']}/")
    return 0, Path(run_dir)


def _recipe_seeds(config_cls: type, config: FinetuneConfig, *, recipe: str) -> int:
    """``--seeds N``: N runs under one root folder, then the between-run spread of every check."""
    PartialState(cpu=_on_cpu(config))  # as finetune() starts it, before the processes agree on the folder
    root = [str(config.output_dir or default_run_dir(recipe, config.strategy, DEFAULT_RUNS_ROOT))]
    broadcast_object_list(root)  # every process must agree on the folder (timestamps differ)
    root = Path(root[0])
    run_dirs = []
    for i in range(config.seeds):
        seed = config.seed + i
        one = dataclasses.replace(config, seed=seed, seeds=1, output_dir=str(root / f"seed-{seed}"))
        if PartialState().is_main_process:
            print(f"\n=== seed {seed} ({i + 1} of {config.seeds}) ===")
        status, run_dir = _train_and_audit(one, recipe=recipe)
        if status:
            return status
        run_dirs.append(run_dir)
    if not PartialState().is_main_process:
        return 0
    try:
        spread = seed_spread(run_dirs)
    except SeedsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print()
    print(format_spread(spread))
    out = write_spread(spread, root / SEEDS_DIR, run_dirs)
    print(f"\nrun folders: {', '.join(str(r) for r in run_dirs)}")
    print(f"between-run spread: {out / SEEDS_CSV}")
    for cmd in next_steps(run_dirs[0], config.audit, config)[-1:]:
        print(f"next: {cmd}")
    return 0

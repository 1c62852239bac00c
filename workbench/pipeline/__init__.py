"""The recipe layer: fine-tune, audit the result, say what happened and what to run next.

Every recipe's ``main`` is :func:`recipe_main`. Training (``workbench.train``) and auditing
(``workbench.audit``) do not know each other; this module runs one after the other.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from workbench import schema
from workbench.audit import run_audit
from workbench.audit.spec import load_audit_spec
from workbench.data import ColumnMap, load_raw, load_splits
from workbench.pipeline.preflight import (
    AUTO_AUDIT,
    Preflight,
    _recipe_default,
    apply_demo_defaults,
    given_flags,
    preflight,
)
from workbench.pipeline.commands import (
    DEFAULT_RUNS_ROOT,
    GENERATED_AUDIT_FILE,
    audit_command,
    audit_split,
    dashboard_command,
    init_command,
    next_steps,
    python_command,
)
from workbench.seeds import SEEDS_CSV, SEEDS_DIR, SeedsError, format_spread, seed_spread, write_spread
from workbench.train import (
    FinetuneConfig,
    LossNotFinite,
    OutOfMemory,
    complete_checkpoints,
    default_run_dir,
    finetune,
    parse_recipe_args,
    use_cpu_threads,
    validate_config,
)

__all__ = [
    "AUTO_AUDIT", "DEFAULT_RUNS_ROOT", "GENERATED_AUDIT_FILE", "RUN_FAILED_FILE", "Preflight", "apply_demo_defaults",
    "audit_command", "audit_headline", "audit_run", "audit_split", "dashboard_command", "given_flags", "init_command",
    "next_steps", "preflight", "python_command", "quiet_third_party_noise", "recipe_main",
]

# Written into a run folder that a failed run leaves behind (one with resumable checkpoints):
# {"error": the one-line message, "exit_status": n}. A failed run without checkpoints is removed.
RUN_FAILED_FILE = schema.RUN_FAILED_FILE


def quiet_third_party_noise() -> None:
    """Silence third-party warnings that say nothing a user can act on (each explained in the README).

    peft warns on every LoRA save that it "could not find a config file" for a hub id it tries
    to re-read (offline, or a folder): the adapter is saved correctly either way; transformers
    warns (FutureWarning) when peft reads an attribute it deprecated.
    """
    warnings.filterwarnings("ignore", message=r"Could not find a config file in .*", module=r"peft(\.|$)")
    # peft's get_peft_model reads transformers' deprecated model.is_gradient_checkpointing; nothing of ours calls it.
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def audit_run(run_dir: str | os.PathLike, config: FinetuneConfig):
    """Audit the run's base and tuned models side by side on :func:`audit_split`; writes ``<run>/audit/<name>/``.

    A split held out of train (the data has none by that name) is carved as training carved it.
    """
    split = audit_split(config)
    raw, _ = load_raw(config.dataset, revision=config.data_revision, config_name=config.data_config)
    data, image_column, label_column = config.dataset, config.image_column, config.label_column or None
    if split not in raw:
        spec = load_audit_spec(config.audit)
        groups = tuple(dict.fromkeys([*spec.group_columns, *config.group_columns]))
        names = raw[config.train_split].column_names
        columns = ColumnMap(image=config.image_column, label=config.label_column or None, groups=groups,
                            caption=config.caption_column if config.caption_column in names else None)
        data = load_splits(config.dataset, columns, splits=[split], revision=config.data_revision,
                           config_name=config.data_config, holdout=config.validation_holdout())[split]
        image_column, label_column = "image", "label" if config.label_column else None
    caption_column = config.caption_column or None
    if not isinstance(data, str):  # carved above: canonical column names
        caption_column = "caption" if caption_column else None
    return run_audit(
        config.audit, str(run_dir), data, split=split, image_column=image_column,
        label_column=label_column, caption_column=caption_column, group_columns=list(config.group_columns) or None,
        data_revision=config.data_revision, data_config=config.data_config, trust_remote_code=config.trust_remote_code,
    )


def audit_headline(summary: dict) -> str:
    """The audit summary's one-sentence headline; ``audit verdict: <verdict>`` where the summary has none."""
    return summary.get("headline") or f"audit verdict: {summary.get('verdict')}"


def _on_cpu(config: FinetuneConfig) -> bool:
    return config.cpu or not torch.cuda.is_available()


def _is_main_process() -> bool:
    # Before accelerate's state exists: the launcher's rank variable (absent: one process).
    return int(os.environ.get("RANK", "0")) == 0


def _error(err: BaseException) -> None:
    if _is_main_process():
        print(f"error: {err}", file=sys.stderr)


def recipe_main(config_cls: type, argv: Sequence[str] | None, *, recipe: str) -> int:
    """What every recipe's ``main`` does: parse, check, fine-tune, audit, print the run folder and next commands.

    Every flag, column and the audit are checked before any model or image loads; bad input
    and training failures end with a one-line ``error:`` message (the last line on stderr)
    and exit status 2 / 1 (``--debug``: the traceback instead). A failed run leaves no run
    folder behind, or, when it holds resumable checkpoints, one marked by ``run_failed.json``.
    On CPU every available core is used, shared among this machine's processes, unless the
    user set a thread count (``--cpu-threads``, ``OMP_NUM_THREADS``). With ``--seeds N`` the
    run is repeated with N seeds and the between-run spread of every check is reported.
    """
    quiet_third_party_noise()
    argv = list(sys.argv[1:] if argv is None else argv)
    config = parse_recipe_args(config_cls, argv)
    given = given_flags(config_cls, argv)
    demo_data = config.dataset == _recipe_default(config_cls, "dataset")
    config = apply_demo_defaults(config, config_cls, given)
    try:
        validate_config(config)  # a bad flag fails here, before any set-up
        config, found = preflight(config, given)
        if _on_cpu(config):
            use_cpu_threads(config.cpu_threads)
    except ValueError as err:
        if config.debug:
            raise
        _error(err)
        return 2
    if _is_main_process():
        for note in found.notes:
            print(f"note: {note}")
        for warning in found.warnings:
            print(f"warning: {warning}")
    if config.seeds > 1:
        return _recipe_seeds(config_cls, config, found, recipe=recipe)
    status, run_dir = _train_and_audit(config, found, recipe=recipe)
    if status or not PartialState().is_main_process:
        return status
    print(f"\nrun folder: {run_dir}")
    # With the audit skipped, the next step still shows the recipe's own audit on its demo data.
    audit = config.audit or (_demo_audit(config_cls) if demo_data else "")
    if found.audit_yaml:
        audit = str(Path(run_dir) / GENERATED_AUDIT_FILE)
    for cmd in next_steps(run_dir, audit, config, held_out=found.held_out, suggest_init=not audit):
        print(f"next: {cmd}")
    return 0


def _demo_audit(config_cls: type) -> str:
    audit = getattr(config_cls, "DEMO_DEFAULTS", {}).get("audit", "")
    return "" if audit in (AUTO_AUDIT, "none") else audit


def _run_folder(config: FinetuneConfig, recipe: str) -> Path:
    """The run folder every process agrees on (the default name carries a timestamp)."""
    PartialState(cpu=_on_cpu(config))
    run_dir = [str(config.output_dir or default_run_dir(recipe, config.strategy, DEFAULT_RUNS_ROOT))]
    broadcast_object_list(run_dir)
    return Path(run_dir[0])


def _clean_up_failed_run(run_dir: Path, existed: bool, message: str, status: int) -> None:
    """No half-made run folder: remove one this run created unless it holds resumable checkpoints; mark the rest."""
    if not PartialState().is_main_process or not run_dir.exists():
        return
    if not existed and not complete_checkpoints(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    from workbench.io import atomic_write_json

    atomic_write_json(run_dir / RUN_FAILED_FILE, {"error": message, "exit_status": status})


def _train_and_audit(config: FinetuneConfig, found: Preflight, *, recipe: str) -> tuple[int, Path | None]:
    """One fine-tuning run and its audit; (exit status, run folder)."""
    run_dir = _run_folder(config, recipe)
    existed = run_dir.exists()
    config = dataclasses.replace(config, output_dir=str(run_dir))
    try:
        run_dir = finetune(config, recipe=recipe)
    except (LossNotFinite, OutOfMemory, ValueError, OSError) as err:
        if config.debug:
            raise
        status = 2 if isinstance(err, ValueError) and not isinstance(err, (LossNotFinite, OutOfMemory)) else 1
        _error(err)
        _clean_up_failed_run(run_dir, existed, str(err), status)
        return status, None
    if PartialState().is_main_process:
        (run_dir / RUN_FAILED_FILE).unlink(missing_ok=True)  # a resumed run that now completed
    if not PartialState().is_main_process:
        return 0, Path(run_dir)
    if found.audit_yaml:
        from workbench.io import atomic_write_text

        audit_file = Path(run_dir) / GENERATED_AUDIT_FILE
        atomic_write_text(audit_file, found.audit_yaml)
        config = dataclasses.replace(config, audit=str(audit_file))
        print(f"audit: no --audit given for this data; generated {audit_file} from it (review it; "
              f"--audit {audit_file} reuses it)")
    elif found.audit_skipped:
        print(f"audit not run: {found.audit_skipped}")
    if config.audit:
        try:
            result = audit_run(run_dir, config)
        except (ValueError, FileNotFoundError) as err:  # the run itself is complete and kept
            if config.debug:
                raise
            print(f"audit not run: {err}", file=sys.stderr)
        else:
            print(audit_headline(result.summary))
            print(f"audit written to {Path(run_dir) / schema.RUN_AUDIT_DIR / result.summary['audit']}/")
    return 0, Path(run_dir)


def _recipe_seeds(config_cls: type, config: FinetuneConfig, found: Preflight, *, recipe: str) -> int:
    """``--seeds N``: N runs under one root folder, then the between-run spread of every check."""
    root = _run_folder(config, recipe)
    if found.audit_yaml and PartialState().is_main_process:
        from workbench.io import atomic_write_text

        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / GENERATED_AUDIT_FILE, found.audit_yaml)
        print(f"audit: no --audit given for this data; generated {root / GENERATED_AUDIT_FILE} from it (review it)")
    if found.audit_yaml:
        config = dataclasses.replace(config, audit=str(root / GENERATED_AUDIT_FILE))
        found = dataclasses.replace(found, audit_yaml=None)
    run_dirs = []
    for i in range(config.seeds):
        seed = config.seed + i
        one = dataclasses.replace(config, seed=seed, seeds=1, output_dir=str(root / f"seed-{seed}"))
        if PartialState().is_main_process:
            print(f"\n=== seed {seed} ({i + 1} of {config.seeds}) ===")
        status, run_dir = _train_and_audit(one, found, recipe=recipe)
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
    for cmd in next_steps(run_dirs[0], config.audit, config, held_out=found.held_out)[-1:]:
        print(f"next: {cmd}")
    return 0

"""The recipe layer: fine-tune, audit the result, say what happened and what to run next.

Every recipe's ``main`` is :func:`recipe_main`. Training (``workbench.train``) and auditing
(``workbench.audit``) do not know each other; this module runs one after the other.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from workbench import schema
from workbench.audit import run_audit
from workbench.audit.init import audit_name_for, document_for_split, validated_yaml
from workbench.audit.runner import check_audit_fits_data
from workbench.audit.spec import load_audit_spec
from workbench.data import (
    ColumnMap,
    DataError,
    ValidationHoldout,
    class_names_of,
    column_values,
    load_raw,
    load_splits,
)
from workbench.models import check_model_reference
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

# Where runs go by default (runs/<recipe>-<strategy>-<time>) and where the dashboard looks by default.
DEFAULT_RUNS_ROOT = "runs"
# --audit auto (the recipes' default): the recipe's own audit on its demo data, else one generated
# from the data into <run>/audit.yaml. --audit '' (or none) skips the audit.
AUTO_AUDIT = "auto"
GENERATED_AUDIT_FILE = "audit.yaml"
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


def _recipe_default(config_cls: type, name: str):
    """The recipe's own default for field ``name`` (what the user gets without the flag)."""
    for f in dataclasses.fields(config_cls):
        if f.name == name:
            return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    raise KeyError(name)


def _on_cpu(config: FinetuneConfig) -> bool:
    return config.cpu or not torch.cuda.is_available()


def given_flags(config_cls: type, argv: Sequence[str]) -> set[str]:
    """The config fields named on the command line (``--group-columns``, ``--group_columns=x``, ``--data``)."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    aliases = {a.lstrip("-").replace("-", "_"): f.name for f in dataclasses.fields(config_cls)
               for a in f.metadata.get("aliases", [])}
    given = set()
    for token in argv:
        if token.startswith("--"):
            key = token[2:].split("=", 1)[0].replace("-", "_")
            key = aliases.get(key, key)
            if key in names:
                given.add(key)
    return given


def apply_demo_defaults(config: FinetuneConfig, config_cls: type, given: set[str]) -> FinetuneConfig:
    """The recipe's ``DEMO_DEFAULTS`` (its demo's group columns, templates, audit), only on its demo data.

    A recipe's field defaults are generic (no group columns, plain templates, an audit generated
    from the data); the demo-specific ones apply only when the data is the recipe's own demo set
    and the user did not give the flag, so a user's data never gets dermatology templates.
    """
    demo = getattr(config_cls, "DEMO_DEFAULTS", {})
    if not demo or config.dataset != _recipe_default(config_cls, "dataset"):
        return config
    return dataclasses.replace(config, **{k: v for k, v in demo.items() if k not in given})


@dataclass
class Preflight:
    """What the checks before any model or image loads found, and what the run will do."""

    notes: list[str] = field(default_factory=list)  # inferred settings, printed before training
    warnings: list[str] = field(default_factory=list)
    audit_yaml: str | None = None  # a generated audit, written to <run>/audit.yaml
    audit_skipped: str | None = None  # why no audit runs
    held_out: bool = False  # the audited split is carved from train


def preflight(config: FinetuneConfig, given: set[str]) -> tuple[FinetuneConfig, Preflight]:
    """Every check that needs only the model reference and the data's table (no images, no weights).

    Returns the config with inferred settings (no caption column: captions from labels; no test
    split: the held-out validation split is the test) and what was inferred; raises
    ``ValueError`` (DataError, ModelLoadError, AuditSpecError) naming the flag, file, row or
    column and the fix.
    """
    found = Preflight()
    check_model_reference(config.model, config.revision)
    raw, _ = load_raw(config.dataset, revision=config.data_revision, config_name=config.data_config)
    available = list(raw)
    if config.train_split not in raw:
        raise DataError(f"{config.dataset}: no split {config.train_split!r}; available splits: {', '.join(available)} "
                        "(set --train-split)")
    train = raw[config.train_split]
    if len(train) == 0:
        raise DataError(f"{config.dataset}: split {config.train_split!r} is empty; point --train-split at a split with rows")
    names = train.column_names
    if config.caption_column and config.caption_column not in names and "caption_column" not in given:
        found.notes.append(f"no {config.caption_column!r} column: training captions are built from the label with the "
                           f"first template ({config.templates[0]!r}); name one with --caption-column")
        config = dataclasses.replace(config, caption_column=None)
    flags = [("--image-column", config.image_column), ("--caption-column", config.caption_column),
             ("--label-column", config.label_column)]
    flags += [("--group-columns", g) for g in config.group_columns]
    flags += [("--balance-groups", g) for g in config.balance_groups]
    flags += [("--align-attributes", g) for g in config.align_attributes]
    for flag, column in flags:
        if column and column not in names:
            raise DataError(f"{config.dataset}: split {config.train_split!r} has no column {column!r}; "
                            f"available columns: {', '.join(names)} (set {flag})")
    held_out = bool(config.validation_split) and config.validation_split not in raw
    if held_out:
        strata = " x ".join(config.validation_holdout().strata) or "nothing"
        found.notes.append(
            f"no {config.validation_split!r} split: holding out {config.validation_fraction:g} of {config.train_split!r} "
            f"as it (stratified by {strata}, seed {config.seed}; stated in config.json; --validation-fraction to change)"
        )
    if config.test_split and config.test_split not in raw:
        if "test_split" in given:
            raise DataError(f"{config.dataset}: no split {config.test_split!r}; available splits: {', '.join(available)} "
                            "(set --test-split, or --test-split '' for none)")
        config = dataclasses.replace(config, test_split="")
        found.notes.append(f"no 'test' split: the final zero-shot test and the audit use the "
                           f"{config.validation_split or config.train_split!r} split; name one with --test-split")
    classes = _class_values(train, config.label_column)
    if len(classes) == 1:
        found.warnings.append(
            f"column {config.label_column!r} holds one class ({next(iter(classes))!r}) in split {config.train_split!r}: "
            "zero-shot accuracy over one class is 100% whatever the model does; use data with two or more classes "
            "(or the right --label-column)"
        )
    split = audit_split(config)
    found.held_out = split not in raw
    if config.audit in ("", "none"):
        return dataclasses.replace(config, audit=""), found
    audit_ds = None
    if config.audit == AUTO_AUDIT:
        if not config.group_columns:
            found.audit_skipped = (
                "an audit compares groups and --group-columns names none; rerun with the data's attribute columns "
                f"(--group-columns <column> ...; columns: {', '.join(names)})")
            return dataclasses.replace(config, audit=""), found
        audit_ds = _audit_split_table(config, split)
        try:
            doc = document_for_split(audit_ds, name=audit_name_for(config.dataset), label_present=bool(config.label_column),
                                     group_columns=config.group_columns, source=config.dataset,
                                     templates=config.templates)
        except DataError as err:  # data an audit cannot be sized to does not stop the fine-tuning
            found.audit_skipped = f"no audit could be generated for split {split!r}: {err}"
            return dataclasses.replace(config, audit=""), found
        found.audit_yaml, _ = validated_yaml(doc, GENERATED_AUDIT_FILE)
        return config, found
    spec = load_audit_spec(config.audit)
    if found.held_out:
        audit_ds = _audit_split_table(config, split, extra_groups=spec.group_columns)
        check_audit_fits_data(spec, [*audit_ds.column_names, *names], len(audit_ds), group_columns=config.group_columns,
                              split=split, source=config.dataset)
    else:
        check_audit_fits_data(spec, raw[split].column_names, len(raw[split]), group_columns=config.group_columns,
                              split=split, source=config.dataset)
    return config, found


def _class_values(split, label_column: str | None) -> set:
    if not label_column:
        return set()
    return {v for v in column_values(split, label_column) if v is not None}


def _audit_split_table(config: FinetuneConfig, split: str, extra_groups: Sequence[str] = ()):
    """The audited split's labels and groups in canonical shape (images untouched), carved when held out."""
    groups = tuple(dict.fromkeys([*config.group_columns, *extra_groups]))
    raw_names = load_raw(config.dataset, revision=config.data_revision, config_name=config.data_config)[0]
    present = set(raw_names[config.train_split].column_names)
    columns = ColumnMap(image=config.image_column, caption=None, label=config.label_column or None,
                        groups=tuple(g for g in groups if g in present))
    return load_splits(config.dataset, columns, splits=[split], revision=config.data_revision,
                       config_name=config.data_config, holdout=config.validation_holdout())[split]


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

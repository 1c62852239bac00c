"""Checks before any model or image loads, and the settings a recipe infers from the data.

Every flag and column is checked here against the data's table alone (no images, no weights),
so a mistake costs seconds and leaves nothing behind; what was inferred is said as a note.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from workbench.audit.init import audit_name_for, document_for_split, validated_yaml
from workbench.audit.runner import check_audit_fits_data
from workbench.audit.spec import load_audit_spec
from workbench.data import (
    ColumnMap,
    DataError,
    column_values,
    load_raw,
    load_splits,
)
from workbench.models import check_model_reference
from workbench.pipeline.commands import GENERATED_AUDIT_FILE, audit_split
from workbench.train import FinetuneConfig

# --audit auto (the recipes' default): the recipe's own audit on its demo data, else one generated
# from the data into <run>/audit.yaml. --audit '' (or none) skips the audit.
AUTO_AUDIT = "auto"


def _recipe_default(config_cls: type, name: str):
    """The recipe's own default for field ``name`` (what the user gets without the flag)."""
    for f in dataclasses.fields(config_cls):
        if f.name == name:
            return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    raise KeyError(name)


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

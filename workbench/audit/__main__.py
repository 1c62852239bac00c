"""``python -m workbench.audit``: audit a model, a folder or a run folder against an audit definition.

``python -m workbench.audit init --data ... --group-columns ...`` writes an audit definition
for the data instead (:mod:`workbench.audit.init`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

from workbench.audit.runner import audited_data, default_output, run_audit
from workbench.audit.spec import AuditSpecError, load_audit_spec
from workbench.data import DataArguments, DataError
from workbench.models import ModelLoadError

# Data flags the audit leaves out: it reads the caption column under its default name only.
_UNUSED_DATA_FLAGS: tuple[str, ...] = ()


def _add_data_arguments(group: argparse._ArgumentGroup) -> None:
    """The recipes' data flags, from their one declaration (:class:`workbench.data.DataArguments`).

    Same names (``--data-config`` and ``--data_config``), aliases (``--data`` for
    ``--dataset``), defaults and help as the recipes; only the unused caption flag is left out.
    """
    hints = typing.get_type_hints(DataArguments)
    for f in dataclasses.fields(DataArguments):
        if f.name in _UNUSED_DATA_FLAGS:
            continue
        names = [f"--{f.name.replace('_', '-')}"] + ([f"--{f.name}"] if "_" in f.name else [])
        names += list(f.metadata.get("aliases", []))
        kwargs: dict = {"dest": f.name, "help": f.metadata.get("help")}
        if typing.get_origin(hints[f.name]) is list:
            kwargs.update(nargs="+", default=None)
        else:
            kwargs.update(default=f.default)
        if f.name == "dataset":
            kwargs["required"] = True  # nothing to audit without data; the recipes default to the demo set
        group.add_argument(*names, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m workbench.audit",
        description="Fairness audit of a CLIP model (or base and tuned from a run folder) on one data split. "
                    "`python -m workbench.audit init --help`: write an audit definition for your own data.",
    )
    g = p.add_argument_group("what to audit")
    g.add_argument("--model", required=True,
                   help="hub id, save_pretrained folder, run folder (audits base and tuned) or workbench/demo-clip")
    g.add_argument("--audit", required=True, help="audit definition, e.g. audits/derm_demo.yaml")
    g.add_argument("--output", default=None,
                   help="folder for results.parquet/csv, summary.json, rankings.parquet (default for a run folder: <run>/audit/<audit name>)")
    d = p.add_argument_group("data (the recipes' data flags; 'none' as --label-column audits without labels)")
    _add_data_arguments(d)
    d.add_argument("--split", default="test", help="split to audit (select thresholds on validation, report on test)")
    r = p.add_argument_group("run")
    r.add_argument("--batch-size", type=int, default=256, help="images per encoder forward pass")
    r.add_argument("--cache-dir", default="default", help="embedding cache folder; 'none' disables it (default: <data home>/embeddings)")
    r.add_argument("--n-boot", type=int, default=None, help="bootstrap resamples (default: the audit's bootstrap.n_boot)")
    r.add_argument("--seed", type=int, default=None, help="bootstrap seed (default: the audit's bootstrap.seed)")
    r.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub (off by default)")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
    r.add_argument("--debug", action="store_true", help="show the full traceback of an error instead of its one-line message")
    d.add_argument("--validation-fraction", type=float, default=None,
                   help="when the data has no --split, hold it out of train as the recipes do (their "
                        "--validation-fraction; stratified by label x --group-columns)")
    d.add_argument("--split-seed", type=int, default=0, help="seed of that hold-out (the recipe's --seed)")
    return p


def data_arguments(args: argparse.Namespace) -> DataArguments:
    """The parsed data flags as the shared dataclass ('none' or '' as label column: no labels)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(DataArguments) if hasattr(args, f.name)}
    if (values.get("label_column") or "").lower() in ("none", ""):
        values["label_column"] = None
    values["group_columns"] = list(values.get("group_columns") or [])
    return DataArguments(**values)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["init"]:
        from workbench.audit.init import main as init_main

        return init_main(argv[1:])
    args = build_parser().parse_args(argv)
    data = data_arguments(args)
    try:
        spec = load_audit_spec(args.audit)
        audited, _, _ = audited_data(data, args.split, args.validation_fraction, args.split_seed, spec)
    except (AuditSpecError, DataError) as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    in_memory = not isinstance(audited, str)
    output = args.output or default_output(args.model, spec.name)
    if output is None:
        print("error: --output is required unless --model is a run folder", file=sys.stderr)
        return 2
    accelerator = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Under `accelerate launch`: each process embeds its shard, the main one writes.
        import torch
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=not torch.cuda.is_available())
    try:
        result = run_audit(
            spec,
            args.model,
            audited,
            output=output,
            split=args.split,
            image_column="image" if in_memory else data.image_column,
            label_column=("label" if data.label_column else None) if in_memory else data.label_column,
            # Captions feed the retrieval family; carved splits hold them under the canonical name.
            caption_column=("caption" if data.caption_column else None) if in_memory else (data.caption_column or None),
            group_columns=data.group_columns or None,
            data_revision=data.data_revision,
            data_config=data.data_config,
            batch_size=args.batch_size,
            cache_dir=None if args.cache_dir.lower() == "none" else args.cache_dir,
            n_boot=args.n_boot,
            seed=args.seed,
            accelerator=accelerator,
            trust_remote_code=args.trust_remote_code,
            progress=not args.no_progress,
        )
    except (DataError, ModelLoadError, FileNotFoundError, ValueError) as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    if result is None:  # not the main process
        return 0
    print(format_summary(result.summary, Path(output)))
    return 0


def format_summary(summary: dict, output: Path) -> str:
    """The verdict for the terminal: the headline, the candidate's checks one per line, the reference as context."""
    lines = [summary["headline"], ""]
    n_tests = summary["multiple_testing"]["families"]["policy_checks"]
    lines.append(f"checks of {summary['candidate']} (they decide; Holm over {n_tests} tests):")
    for c in summary["checks"]:
        lines.append(f"  {c['verdict'].upper():<12} {c['sentence']}")
    reference = summary.get("reference")
    context = summary.get("reference_checks", [])
    if reference and context:
        counts = {v: sum(c["verdict"] == v for c in context) for v in ("fail", "warn", "inconclusive", "pass")}
        shown = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        lines.append(f"reference {reference} ({context[0]['model_id']}), context only, never the verdict: {shown}")
        failed = [c for c in context if c["verdict"] == "fail"]
        for c in failed[:3]:
            lines.append(f"  FAIL (reference) {c['sentence']}")
        if len(failed) > 3:
            lines.append(f"  ... {len(failed) - 3} more reference failures in summary.json")
        for sentence in summary.get("fixed", []):
            lines.append(f"  fixed: {sentence}")
    for w in summary["warnings"][:10]:
        lines.append(f"warning: {w}")
    if len(summary["warnings"]) > 10:
        lines.append(f"... {len(summary['warnings']) - 10} more warnings in summary.json")
    lines.append(f"results in {output}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""``python -m workbench.audit``: audit a model, a folder or a run folder against an audit definition."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m workbench.audit",
        description="Fairness audit of a CLIP model (or base and tuned from a run folder) on one data split.",
    )
    g = p.add_argument_group("what to audit")
    g.add_argument("--model", required=True,
                   help="hub id, save_pretrained folder, run folder (audits base and tuned) or workbench/demo-clip")
    g.add_argument("--audit", required=True, help="audit definition, e.g. audits/derm_demo.yaml")
    g.add_argument("--output", default=None,
                   help="folder for results.parquet/csv, summary.json, rankings.parquet (default for a run folder: <run>/audit/<audit name>)")
    d = p.add_argument_group("data (same options as the recipes)")
    d.add_argument("--data", required=True, help="hub id, save_to_disk folder, imagefolder, parquet/CSV/JSONL, or workbench/demo-derm")
    d.add_argument("--split", default="test", help="split to audit (select thresholds on validation, report on test)")
    d.add_argument("--image-column", default="image", help="column holding images or image paths")
    d.add_argument("--caption-column", default=None, help="accepted for symmetry with the recipes; the audit does not use captions")
    d.add_argument("--label-column", default="label", help="class-name column for zero-shot accuracy; 'none' to audit without labels")
    d.add_argument("--group-columns", nargs="+", default=None, help="sensitive-attribute columns (default: the audit's attributes)")
    d.add_argument("--data-revision", default=None, help="dataset revision (hub datasets)")
    d.add_argument("--data-config", default=None, help="dataset configuration name (hub datasets with several, e.g. FairFace '1.25')")
    r = p.add_argument_group("run")
    r.add_argument("--batch-size", type=int, default=256, help="images per encoder forward pass")
    r.add_argument("--cache-dir", default="default", help="embedding cache folder; 'none' disables it (default: <data home>/embeddings)")
    r.add_argument("--n-boot", type=int, default=None, help="bootstrap resamples (default: the audit's bootstrap.n_boot)")
    r.add_argument("--seed", type=int, default=None, help="bootstrap seed (default: the audit's bootstrap.seed)")
    r.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub (off by default)")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from workbench.audit.runner import default_output, run_audit
    from workbench.audit.spec import AuditSpecError, load_audit_spec
    from workbench.data import DataError
    from workbench.models import ModelLoadError

    try:
        spec = load_audit_spec(args.audit)
    except AuditSpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    output = args.output or default_output(args.model, spec.name)
    if output is None:
        print("error: --output is required unless --model is a run folder", file=sys.stderr)
        return 2
    accelerator = None
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Under `accelerate launch`: each process embeds its shard, the main one writes.
        import torch
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=not torch.cuda.is_available())
    label = None if args.label_column.lower() in ("none", "") else args.label_column
    try:
        result = run_audit(
            spec,
            args.model,
            args.data,
            output=output,
            split=args.split,
            image_column=args.image_column,
            label_column=label,
            group_columns=args.group_columns,
            data_revision=args.data_revision,
            data_config=args.data_config,
            batch_size=args.batch_size,
            cache_dir=None if args.cache_dir.lower() == "none" else args.cache_dir,
            n_boot=args.n_boot,
            seed=args.seed,
            accelerator=accelerator,
            trust_remote_code=args.trust_remote_code,
            progress=not args.no_progress,
        )
    except (DataError, ModelLoadError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if result is None:  # not the main process
        return 0
    print(format_summary(result.summary, Path(output)))
    return 0


def format_summary(summary: dict, output: Path) -> str:
    """A short plain-text account of the verdicts for the terminal."""
    lines = [f"audit {summary['audit']}: verdict {summary['verdict'].upper()}  ({summary['n_tests']} tests, Holm)"]
    for c in summary["checks"]:
        where = " ".join(str(x) for x in (c["model"], c["attribute"], c["group"], c.get("label", "")) if x)
        lines.append(f"  {c['verdict']:<12} {c['name']} [{where}]: {c['reason']}")
    for w in summary["warnings"][:10]:
        lines.append(f"  warning: {w}")
    if len(summary["warnings"]) > 10:
        lines.append(f"  ... {len(summary['warnings']) - 10} more warnings in summary.json")
    lines.append(f"results in {output}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

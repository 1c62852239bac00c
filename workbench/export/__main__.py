"""``python -m workbench.export onnx <run folder or model> [--output DIR]``: ONNX encoders checked for parity.

Prints the folder and each parity check on success (exit 0). On a failed parity check it
prints one line naming the check and exits 1, leaving nothing at the output folder; bad
flags or an unloadable model exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from workbench.data import DEMO_DATASET
from workbench.export import ExportError, ParityError, default_export_dir, export_onnx, run_settings
from workbench.export.onnx import DEFAULT_OPSET, DEFAULT_TOLERANCE
from workbench.models import ModelLoadError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workbench.export",
                                description="Export a CLIP model for deployment, checked against PyTorch.")
    sub = p.add_subparsers(dest="format", required=True)
    o = sub.add_parser("onnx", help="image and text encoders as ONNX (dynamic batch), processor beside them")
    o.add_argument("model", help="run folder (exports its fine-tuned model), save_pretrained folder, hub id or "
                                 "workbench/demo-clip")
    o.add_argument("--output", default=None, help="folder to write (default for a run folder: <run>/onnx)")
    d = o.add_argument_group("parity data (default for a run folder: its own data, test split and templates; "
                             f"else {DEMO_DATASET})")
    d.add_argument("--data", "--dataset", dest="data", default=None, help="data source for the parity check")
    d.add_argument("--split", default=None, help="split whose images are compared (default: test)")
    d.add_argument("--image-column", default=None, help="column holding images (default: image)")
    d.add_argument("--caption-column", default=None, help="column holding captions ('none': compare class prompts only)")
    d.add_argument("--label-column", default=None, help="column holding class names (default: label)")
    d.add_argument("--templates", nargs="+", default=None, help="zero-shot templates with {} (default: 'a photo of {}.')")
    d.add_argument("--parity-rows", type=int, default=None, help="compare only the first N images (default: all)")
    r = o.add_argument_group("export")
    r.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset version")
    r.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help="largest allowed absolute difference of normalised embeddings")
    r.add_argument("--batch-size", type=int, default=64, help="images per forward pass in the parity check")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output = args.output or default_export_dir(args.model)
    if output is None:
        print("error: --output is required unless the model is a run folder", file=sys.stderr)
        return 2
    try:
        run = run_settings(args.model)
        caption = args.caption_column if args.caption_column is not None else run.get("caption_column", "caption")
        kwargs = dict(
            data=args.data or run.get("dataset", DEMO_DATASET),
            split=args.split or run.get("split", "test"),
            image_column=args.image_column or run.get("image_column", "image"),
            caption_column=None if not caption or caption.lower() == "none" else caption,
            label_column=args.label_column or run.get("label_column", "label"),
            parity_rows=args.parity_rows, opset=args.opset, tolerance=args.tolerance, batch_size=args.batch_size,
        )
        templates = args.templates or run.get("templates")
        if templates:
            kwargs["templates"] = list(templates)
        folder, report = export_onnx(args.model, output, **kwargs)
    except ParityError as err:
        print(f"export failed: {err}", file=sys.stderr)
        return 1
    except (ExportError, ModelLoadError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"ONNX encoders written to {folder}")
    for check in report.checks:
        print(f"  PASS {check.name}: {check.detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m workbench.demo build [--force] [--check]``: build the embedded demo into .data/."""

from __future__ import annotations

import argparse
import sys

# The command line sits above the demo library: it may use data, models and embed (the
# demo modules it drives import none of them).
from workbench.data import DEMO_DATASET, DEMO_DATASETS, ColumnMap, ensure_demo_dataset, load_splits, pixels_for
from workbench.demo.base import build_demo_model, demo_model_dir, ensure_demo_model, rebuild_matches
from workbench.demo.derm import CLASSES
from workbench.demo.prompts import CLASS_TEMPLATES, DESCRIPTIVE_PROMPTS
from workbench.embed import class_embeddings, encode_images, prompt_set_embeddings, zero_shot_predict
from workbench.models import DEMO_MODEL, load_clip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.demo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="generate the demo data set and the tiny base CLIP (skipped when current)")
    build.add_argument("--force", action="store_true", help="rebuild even when the cached build is current")
    build.add_argument("--check", action="store_true", help="rebuild in a temp folder and verify the weights match bit for bit")
    sub.add_parser("baseline", help="zero-shot accuracy of the demo base on the demo test split (README table)")
    args = parser.parse_args(argv)
    if args.command == "baseline":
        return print_baseline()

    for name in DEMO_DATASETS:
        print(f"demo data set {name}: {ensure_demo_dataset(name)}")
    if args.force:
        build_demo_model(demo_model_dir())
    model_dir = ensure_demo_model()
    print(f"demo base CLIP: {model_dir}")
    if args.check:
        same, cached, fresh = rebuild_matches(model_dir)
        print(f"rebuild {'matches' if same else 'DIFFERS'}: cached {cached[:16]} rebuilt {fresh[:16]}")
        return 0 if same else 1
    return 0


def print_baseline() -> int:
    """Zero-shot accuracy of the base on the test split with bare and descriptive prompts."""
    model, processor = load_clip(DEMO_MODEL)
    test = load_splits(DEMO_DATASET, ColumnMap.demo(), splits=["test"])["test"]
    pixels = pixels_for(test, processor.image_processor, progress=False)
    images = encode_images(model, pixels.pixels, processor.image_processor)
    truth = [CLASSES.index(c) for c in test["label"]]
    rows = {
        "bare class names (5 templates)": class_embeddings(model, processor.tokenizer, CLASSES, CLASS_TEMPLATES),
        "descriptive prompts (generic words)": prompt_set_embeddings(
            model, processor.tokenizer, [DESCRIPTIVE_PROMPTS[c] for c in CLASSES]
        ),
    }
    print(f"| prompts | top-1 accuracy (demo test, n={len(test)}) |")
    print("|---|---|")
    for name, cls in rows.items():
        pred = zero_shot_predict(images, cls).tolist()
        acc = sum(p == t for p, t in zip(pred, truth)) / len(truth)
        print(f"| {name} | {100 * acc:.1f}% |")
    print(f"| chance (4 classes) | {100 / len(CLASSES):.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

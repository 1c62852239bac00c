"""What balanced fine-tuning costs when the data has nothing to balance.

The demo generator draws skin tone and class independently, so the skin tone x class cells of
a training split differ only by sampling noise (1200 pairs: 75 to 116 per cell). This script
fine-tunes the demo base on such a split (frozen image tower, 3 epochs, the settings of the
known-answer tests in ``tests/test_mitigate_run.py``) with and without ``--balance-groups
skin_tone`` (``--balance-by-label`` and without; resampling, and reweighting by label), for several seeds, alternating, and reports
the zero-shot test accuracy of each run and the paired differences per seed. Resampling draws
each epoch to equal cells with replacement (rows of small cells repeat, rows of large cells are
left out for that epoch); reweighting keeps the plain shuffle and weights each pair's loss.

    python bench/balance_noise.py --seeds 3 --output bench/results/balance_noise.json
    python bench/balance_noise.py --seeds 3 --caption-terms --output bench/results/balance_noise_terms.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import benchlib

TEMPLATES = ["a dermoscopy image of {}.", "a clinical photo of {}.", "a skin lesion: {}."]
ARMS = {"plain": {}, "balance skin_tone": {"balance_groups": ["skin_tone"]},
        "balance skin_tone x label": {"balance_groups": ["skin_tone"], "balance_by_label": True},
        "reweight skin_tone x label": {"balance_groups": ["skin_tone"], "balance_by_label": True,
                                       "balance_method": "reweight"}}


# --caption-terms: the training captions of tests/test_mitigate_run.py's planted-phrase data
CAPTION_TERMS = {"light": "on light skin", "medium": "on medium skin", "dark": "on dark skin, suspicious"}


def make_data(folder: Path, n_train: int, caption_terms: bool) -> dict:
    import datasets

    from workbench.demo.derm import DermBias, generate_derm

    contrast = {"light": 1.0, "medium": 1.0, "dark": 0.35}
    terms = CAPTION_TERMS if caption_terms else {}
    splits = generate_derm({"train": n_train}, seed=11, bias=DermBias(contrast=contrast, caption_terms=terms))
    held_out = generate_derm({"validation": 300, "test": 900}, seed=12, bias=DermBias(contrast=contrast))
    datasets.DatasetDict({**splits, **held_out}).save_to_disk(str(folder))
    sizes = splits["train"].select_columns(["skin_tone", "label"]).to_pandas().value_counts()
    return {"cells": len(sizes), "smallest_cell": int(sizes.min()), "largest_cell": int(sizes.max())}


def train(data: Path, out: Path, seed: int, arm: dict) -> float:
    from accelerate.state import AcceleratorState

    from workbench.models import DEMO_MODEL
    from workbench.train import FinetuneConfig, finetune

    AcceleratorState._reset_state(reset_partial_state=True)
    config = FinetuneConfig(model=DEMO_MODEL, dataset=str(data), label_column="label", group_columns=["skin_tone"],
                            output_dir=str(out), strategy="frozen-image", learning_rate=5e-4, epochs=3, seed=seed,
                            per_device_batch_size=64, eval_steps=0, checkpoint_steps=0, audit="", cpu=True,
                            templates=TEMPLATES, **arm)
    run = finetune(config, recipe="bench")
    return float(json.loads((run / "zeroshot.json").read_text())["tuned"]["test"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per arm (default 3)")
    parser.add_argument("--train-pairs", type=int, default=1200)
    parser.add_argument("--caption-terms", action="store_true",
                        help="training captions name the skin tone and dark skin's carry 'suspicious' (the planted-phrase data)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default 0: every available core)")
    parser.add_argument("--output", default=None, help="also write the JSON to this file")
    args = parser.parse_args(argv)
    threads = args.threads if args.threads > 0 else len(os.sched_getaffinity(0))
    benchlib.configure(threads)
    scratch = Path(tempfile.mkdtemp(prefix="bench-balance-"))
    try:
        cells = make_data(scratch / "data", args.train_pairs, args.caption_terms)
        accuracy: dict[str, list[float]] = {name: [] for name in ARMS}
        for seed in range(args.seeds):
            for name, arm in ARMS.items():  # alternating arms within each seed
                accuracy[name].append(train(scratch / "data", scratch / f"{seed}-{len(accuracy[name])}-{name}", seed, arm))
        diffs = {name: [b - a for a, b in zip(accuracy["plain"], accuracy[name])] for name in ARMS if name != "plain"}
        benchlib.emit({
            "benchmark": "balance_noise",
            "machine": benchlib.machine(),
            "config": {"train_pairs": args.train_pairs, "caption_terms": args.caption_terms, **cells, "seeds": args.seeds, "strategy": "frozen-image",
                       "epochs": 3, "threads": threads},
            "test_accuracy": {k: [round(v, 4) for v in vs] for k, vs in accuracy.items()},
            "difference_from_plain": {k: [round(v, 4) for v in vs] for k, vs in diffs.items()},
            "mean_difference": {k: round(statistics.fmean(vs), 4) for k, vs in diffs.items()},
        }, args.output)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

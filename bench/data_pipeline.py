"""Is the data path the bottleneck? Images/s the training data path delivers against model steps/s.

The workbench decodes and resizes every image once per split (``workbench.data.pixels_for``:
uint8 tensors at the model's input size) and tokenises every caption once; per batch it only
indexes those tensors, normalises (``normalize_pixels``) and pads the token ids
(``PairData.pixel_batch`` / ``text_batch``, as ``train_loop`` does). Measured, alternating:

* ``decode_once``     one-time decode + resize of the split (images/s)
* ``batch_delivery``  per-batch work of the training loop (images/s)
* ``per_example``     the run_clip.py-style path: PIL decode + image processor per example,
                      collate (images/s), what the baseline pays every epoch
* ``model_step``      one full fine-tuning step (forward, backward, AdamW) (samples/s)

    python bench/data_pipeline.py --quick
    python bench/data_pipeline.py
"""

from __future__ import annotations

import argparse
import sys

import benchlib


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="workbench/demo-clip")
    parser.add_argument("--dataset", default="workbench/demo-derm")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--images", type=int, default=None, help="rows decoded (default 3000 = the demo train split; quick 512)")
    parser.add_argument("--batches", type=int, default=None, help="batches per timing (default 20; quick 8)")
    benchlib.add_common_args(parser, quick_help="512 images, 8 batches, 3 repeats: well under 2 minutes")
    args = parser.parse_args(argv)
    benchlib.configure(args.threads)
    import torch
    from training_sides import baseline_dataset, collate, load_train_split

    from workbench.data import pixels_for
    from workbench.models import load_clip
    from workbench.train.accumulate import contrastive_step
    from workbench.train.encoder import ContrastiveEncoder
    from workbench.train.pairs import build_pair_data
    from workbench.train.strategies import param_groups

    images = args.images or (512 if args.quick else 3000)
    batches = args.batches or (8 if args.quick else 20)
    repeats = args.repeats or 3
    split = load_train_split(args.dataset, images)
    model, processor = load_clip(args.model)
    ip = processor.image_processor
    context = int(model.config.text_config.max_position_embeddings)
    pairs = build_pair_data(split, processor, max_length=context, progress=False)
    per_example = baseline_dataset(split, processor, context)
    device = torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    row_batches = [torch.randperm(len(pairs), generator=gen)[: args.batch] for _ in range(batches)]
    encoder = ContrastiveEncoder(model).train()
    optimizer = torch.optim.AdamW(param_groups(encoder, 0.1), lr=1e-5)

    def decode_once():
        return pixels_for(split, ip, progress=False)

    def batch_delivery():
        for rows in row_batches:
            batch = pairs.text_batch(rows, device)
            batch["pixel_values"] = pairs.pixel_batch(rows, ip, device)

    def baseline_per_example():
        for rows in row_batches:
            collate([per_example[int(i)] for i in rows])

    step_batches = []
    for rows in row_batches[: max(2, batches // 2)]:
        b = pairs.text_batch(rows, device)
        b["pixel_values"] = pairs.pixel_batch(rows, ip, device)
        step_batches.append(b)

    def model_step():
        for b in step_batches:
            contrastive_step(encoder, [b])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    raw = benchlib.alternate(
        {"decode_once": decode_once, "batch_delivery": batch_delivery, "per_example": baseline_per_example, "model_step": model_step},
        repeats=repeats, warmup=1,
    )
    counts = {"decode_once": len(split), "batch_delivery": batches * args.batch, "per_example": batches * args.batch,
              "model_step": len(step_batches) * args.batch}
    rates = {name: round(counts[name] / benchlib.median(t for t, _ in runs), 1) for name, runs in raw.items()}
    step_rate = rates["model_step"]
    benchlib.emit({
        "benchmark": "data_pipeline",
        "machine": benchlib.machine(),
        "config": {"model": args.model, "batch": args.batch, "images": len(split), "batches": batches, "repeats": repeats,
                   "threads": args.threads, "quick": args.quick},
        "images_per_s": rates,
        "seconds": {name: [round(t, 4) for t, _ in runs] for name, runs in raw.items()},
        "delivery_over_model": benchlib.ratio(rates["batch_delivery"], step_rate),
        "per_example_over_model": benchlib.ratio(rates["per_example"], step_rate),
        "delivery_over_per_example": benchlib.ratio(rates["batch_delivery"], rates["per_example"]),
        "loader_share_of_step": round(step_rate / rates["batch_delivery"], 4),
        "loader_is_bottleneck": rates["batch_delivery"] < step_rate,
        "approach": "decode + resize once per split to uint8 (N,3,H,W) tensors; per batch: index, normalise, pad token ids",
    }, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

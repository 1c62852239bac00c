"""Real size on the CPU: ViT-B/32 shapes at 224 px, per strategy and precision, against the Trainer loop.

The model is ``CLIPConfig()``'s defaults (ViT-B/32: vision 12 x 768, patch 32, 224 px; text
12 x 512, 77 tokens, 49,408-token vocabulary; 151 M parameters) with random weights, on the
demo's tokenizer (its special-token ids set in the config; no shape changes); the data are the
demo's training images upscaled to 224 x 224 JPEGs with their captions. Each cell is a fresh
process that trains 2 epochs of ``--steps`` steps through ``training_sides.run_ours`` or
``run_baseline`` (the run_clip-style ``Trainer``) and reports epoch 2's samples/s (epoch 1
holds the set-up) and its peak RSS. No checkpoints on either side. Threads: every core.

Then the gradient-checkpointing question: what one training step holds in memory, counted
exactly rather than read off RSS: the tensors autograd saves for backward (every saved
tensor's storage counted once, via ``torch.autograd.graph.saved_tensors_hooks``) with and
without checkpointing, against weights, gradients and the AdamW state (two fp32 moments per
trainable parameter).

    python bench/real_size.py --quick                                   # batch 4, 1 step per epoch, fp32 full only
    python bench/real_size.py --impls ours,baseline --precisions no --output bench/results/real_size_fp32.json
    python bench/real_size.py --impls ours,baseline --precisions bf16 --output bench/results/real_size_bf16.json
    python bench/real_size.py --activations-only --output bench/results/real_size_activations.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import benchlib

STRATEGIES = ("full", "frozen-image", "lora")


def vit_b32_folder() -> str:
    """A save_pretrained folder: ``CLIPConfig()`` (ViT-B/32) with random weights, the demo tokenizer, 224 px processor."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    from workbench.models import load_clip, save_clip
    from workbench.paths import data_home

    folder = data_home() / "bench" / "vit-b-32-random"
    if (folder / "config.json").exists():
        return str(folder)
    _, demo = load_clip("workbench/demo-clip")
    tok = demo.tokenizer
    config = CLIPConfig()
    text = config.text_config
    text.bos_token_id, text.eos_token_id, text.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    torch.manual_seed(0)
    model = CLIPModel(config)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}),
        tokenizer=tok,
    )
    save_clip(model, processor, folder)
    return str(folder)


def jpeg_split(n: int) -> str:
    """A save_to_disk folder with split ``train``: ``n`` demo training images as 224 px JPEGs, with captions."""
    import datasets
    from PIL import Image

    from workbench.data import ColumnMap, load_splits
    from workbench.io import atomic_dir
    from workbench.paths import data_home

    folder = data_home() / "bench" / f"derm-train-jpeg224-{n}"
    if (folder / "dataset_dict.json").exists():
        return str(folder)
    split = load_splits("workbench/demo-derm", ColumnMap(), splits=["train"])["train"].select(range(n))
    rows = {"image": [], "caption": list(split["caption"]), "label": list(split["label"])}
    for value in split["image"]:
        image = Image.open(io.BytesIO(value["bytes"])).convert("RGB").resize((224, 224), Image.BICUBIC)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        rows["image"].append({"bytes": buf.getvalue(), "path": None})
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string"), "label": datasets.Value("string")})
    with atomic_dir(folder) as tmp:
        datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=features)}).save_to_disk(str(tmp))
    return str(folder)


# ---------------------------------------------------------------------------- one cell, in a fresh process


def child(args) -> dict:
    import resource

    from training_sides import RunSpec, load_train_split, run_baseline, run_ours

    split = load_train_split(args.dataset, args.batch * args.steps)
    spec = RunSpec(args.model, args.child, args.batch, 2, checkpoint_each_epoch=False, precision=args.child_precision,
                   gradient_checkpointing=args.child_gc)
    times = (run_ours if args.impl == "ours" else run_baseline)(spec, split)
    return {"epoch_seconds": times["wall"], "epoch_cpu_seconds": times["cpu"],
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def spawn(args, impl: str, strategy: str, precision: str, gc: bool) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", strategy, "--impl", impl, "--child-precision", precision,
           "--batch", str(args.batch), "--steps", str(args.steps), "--model", args.model, "--dataset", args.dataset,
           "--threads", str(args.threads)] + (["--child-gc"] if gc else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"cell {impl}/{strategy}/{precision}/gc={gc} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    samples = args.batch * args.steps
    out["samples_per_s_epoch2"] = round(samples / out["epoch_seconds"][1], 2)
    out["samples_per_cpu_s_epoch2"] = round(samples / out["epoch_cpu_seconds"][1], 3)
    return out


# ---------------------------------------------------------------------------- what a step holds


def saved_activation_bytes(model, batch: dict) -> int:
    """Bytes autograd keeps for backward after one forward pass of the loss (each storage once, weights excluded).

    With non-reentrant checkpointing enabled on ``model``, the checkpoint's own hooks take over inside every
    checkpointed layer, so what is counted there is what stays outside them; the layer inputs
    the checkpoint keeps are added by :func:`checkpoint_inputs_bytes`.
    """
    import torch

    from workbench.train.encoder import ContrastiveEncoder
    from workbench.train.loss import contrastive_loss

    seen: dict[int, int] = {}
    # Autograd also saves weights (a linear layer keeps its weight for the input gradient); those
    # are counted as weights, not here.
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        image, text, scale = ContrastiveEncoder(model)(**batch)
        loss = contrastive_loss(image, text, scale)
    del loss
    return sum(seen.values())


def checkpoint_inputs_bytes(model, batch_size: int, text_len: int) -> int:
    """fp32 bytes of the hidden states a checkpointed encoder keeps: one (B, L, d) input per layer and tower."""
    v, t = model.config.vision_config, model.config.text_config
    tokens = (v.image_size // v.patch_size) ** 2 + 1
    return 4 * batch_size * (v.num_hidden_layers * tokens * v.hidden_size + t.num_hidden_layers * text_len * t.hidden_size)


def memory_budget(model_dir: str, dataset: str, batch: int) -> dict:
    """Weights, gradients, AdamW state and saved activations of one step, per strategy, in MiB."""
    import torch

    from training_sides import load_train_split
    from workbench.models import load_clip
    from workbench.train.pairs import build_pair_data
    from workbench.train.strategies import apply_strategy

    split = load_train_split(dataset, batch)
    mib = 2**20
    out: dict = {"batch": batch}
    for strategy in STRATEGIES:
        model, processor = load_clip(model_dir)
        pairs = build_pair_data(split, processor, max_length=int(model.config.text_config.max_position_embeddings), progress=False)
        rows = torch.arange(batch)
        inputs = pairs.text_batch(rows, torch.device("cpu"))
        inputs["pixel_values"] = pairs.pixel_batch(rows, processor.image_processor, torch.device("cpu"))
        text_len = int(inputs["input_ids"].shape[1])
        if strategy == "frozen-image":  # the vision tower never runs: cached image features stand in
            with torch.no_grad():
                inputs["image_features"] = model.get_image_features(pixel_values=inputs.pop("pixel_values")).pooler_output
        params = sum(p.numel() for p in model.parameters())
        if strategy == "full":
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            ckpt_outside = saved_activation_bytes(model, inputs)
            model.gradient_checkpointing_disable()
        wrapped = apply_strategy(model, strategy)
        plain = saved_activation_bytes(wrapped, inputs)
        trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
        row = {
            "parameters": params, "trainable": trainable, "text_tokens": text_len,
            "weights_mib": round(4 * params / mib, 1), "gradients_mib": round(4 * trainable / mib, 1),
            "adamw_state_mib": round(8 * trainable / mib, 1),
            "activations_mib": round(plain / mib, 1),
        }
        if strategy == "full":
            kept = checkpoint_inputs_bytes(model, batch, text_len)
            row["activations_checkpointed_mib"] = round((ckpt_outside + kept) / mib, 1)
            row["activations_checkpointed_outside_layers_mib"] = round(ckpt_outside / mib, 1)
        out[strategy] = row
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 16; quick 4)")
    parser.add_argument("--steps", type=int, default=None, help="steps per epoch (default 2; quick 1)")
    parser.add_argument("--impls", default="ours,baseline")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--precisions", default="no,bf16", help="no (fp32) and/or bf16")
    parser.add_argument("--no-gc", action="store_true", help="skip the gradient-checkpointing cells (full, fp32)")
    parser.add_argument("--activations-only", action="store_true", help="only the memory budget of one step")
    parser.add_argument("--quick", action="store_true", help="batch 4, 1 step per epoch, fp32 full only, both impls")
    parser.add_argument("--threads", type=int, default=0, help="default 0: every available core")
    parser.add_argument("--output", default=None)
    for hidden in ("--child", "--impl", "--child-precision", "--model", "--dataset"):
        parser.add_argument(hidden, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-gc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.threads = args.threads if args.threads > 0 else len(os.sched_getaffinity(0))
    benchlib.configure(args.threads)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    args.batch = args.batch or (4 if args.quick else 16)
    args.steps = args.steps or (1 if args.quick else 2)
    if args.quick:
        args.strategies, args.precisions = "full", "no"
    args.model = vit_b32_folder()
    args.dataset = jpeg_split(max(64, args.batch * args.steps))
    result: dict = {"benchmark": "real_size", "machine": benchlib.machine(),
                    "config": {"model": "CLIPConfig() defaults (ViT-B/32), random weights", "image_px": 224,
                               "batch": args.batch, "steps_per_epoch": args.steps, "threads": args.threads,
                               "quick": args.quick}}
    if not args.activations_only:
        cells = []
        for precision in args.precisions.split(","):
            for strategy in args.strategies.split(","):
                for impl in args.impls.split(","):
                    cells.append((impl, strategy, precision, False))
        if not args.no_gc and "full" in args.strategies.split(",") and "no" in args.precisions.split(","):
            cells += [(impl, "full", "no", True) for impl in args.impls.split(",")]
        rows = []
        for impl, strategy, precision, gc in cells:
            row = {"impl": impl, "strategy": strategy, "precision": "fp32" if precision == "no" else precision,
                   "gradient_checkpointing": gc, **spawn(args, impl, strategy, precision, gc)}
            rows.append(row)
            print(f"{impl} {strategy} {row['precision']} gc={gc}: {row['samples_per_s_epoch2']} samples/s, "
                  f"{row['peak_rss_mib']} MiB", file=sys.stderr)
        result["cells"] = rows
        result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    result["memory_budget"] = memory_budget(args.model, args.dataset, args.batch)
    benchlib.emit(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

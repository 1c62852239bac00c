"""Peak memory of a few training steps per strategy, each in a fresh process.

CPU: peak resident set size (``ru_maxrss``) of the child process; GPU: also
``torch.cuda.max_memory_allocated``. An ``idle`` child imports the same libraries and loads
the same model and data but does not train; ``train_overhead_mib`` is peak minus that idle
peak, i.e. what training itself costs. Both the workbench path and the Trainer baseline
(``training_sides.py``) are measured at the same batch.

    python bench/memory.py --quick
    python bench/memory.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import benchlib

STRATEGIES = ("full", "frozen-image", "lora")


def wide_model() -> str:
    """A folder holding a randomly initialised CLIP with ViT-B widths (151 M parameters at these sizes
    would be ViT-B/32; here 12 + 12 layers of width 768 / 512) on the demo's tokenizer and 64 px images.

    Parameter, gradient and optimizer memory dominate at this size, as on real CLIPs; in the
    1.2 M-parameter demo model activations dominate. Built once, reused.
    """
    import torch
    from transformers import CLIPConfig, CLIPModel

    from workbench.models import load_clip, save_clip
    from workbench.paths import data_home

    folder = data_home() / "bench" / "wide-clip"
    if (folder / "config.json").exists():
        return str(folder)
    demo, processor = load_clip("workbench/demo-clip")
    text = demo.config.text_config.to_dict()
    text.update(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8)
    vision = demo.config.vision_config.to_dict()
    vision.update(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=16)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=512)
    torch.manual_seed(0)
    save_clip(CLIPModel(config), processor, folder)
    return str(folder)


def child(args) -> dict:
    """Runs inside the fresh process: train ``args.steps`` steps (or nothing for ``idle``)."""
    import resource

    import torch
    from training_sides import RunSpec, load_train_split, run_baseline, run_ours

    from workbench.models import load_clip

    split = load_train_split(args.dataset, args.batch * args.steps)
    if args.child == "idle":
        model, _ = load_clip(args.model)
        # Touch every weight: a memory-mapped checkpoint only becomes resident when read.
        float(sum(p.detach().double().sum() for p in model.parameters()))
        seconds = []
    else:
        run = run_ours if args.impl == "ours" else run_baseline
        seconds = run(RunSpec(args.model, args.child, args.batch, 1), split)
    out = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "seconds": seconds}
    if torch.cuda.is_available():
        out["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def spawn(args, strategy: str, impl: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", strategy, "--impl", impl,
           "--batch", str(args.batch), "--steps", str(args.steps), "--model", args.model,
           "--dataset", args.dataset, "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child {strategy}/{impl} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="workbench/demo-clip")
    parser.add_argument("--dataset", default="workbench/demo-derm")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 128; quick 64)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per child (default 3; quick 2)")
    parser.add_argument("--impls", default="ours,baseline", help="comma-separated: ours, baseline")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated; full is always measured")
    parser.add_argument("--wide", action="store_true", help="measure a random CLIP with ViT-B widths instead of --model")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--impl", default="ours", help=argparse.SUPPRESS)
    benchlib.add_common_args(parser, quick_help="batch 64, 2 steps, one child per cell: about 1.5 minutes")
    args = parser.parse_args(argv)
    benchlib.configure(args.threads)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    if args.wide:
        args.model = wide_model()
    args.batch = args.batch or (64 if args.quick else 128)
    args.steps = args.steps or (2 if args.quick else 3)
    repeats = args.repeats or (1 if args.quick else 2)
    impls = args.impls.split(",")
    strategies = ["full"] + [s for s in args.strategies.split(",") if s != "full"]

    idle = [spawn(args, "idle", "ours")["peak_rss_mib"] for _ in range(repeats)]
    idle_peak = benchlib.median(idle)
    table: dict[str, dict] = {impl: {} for impl in impls}
    runs: dict[tuple[str, str], list[dict]] = {}
    for r in range(repeats):
        order = [(s, i) for s in strategies for i in impls]
        for strategy, impl in order if r % 2 == 0 else reversed(order):
            runs.setdefault((strategy, impl), []).append(spawn(args, strategy, impl))
    for (strategy, impl), results in runs.items():
        peak = benchlib.median(x["peak_rss_mib"] for x in results)
        cell = {"peak_rss_mib": round(peak, 1), "train_overhead_mib": round(peak - idle_peak, 1),
                "all_peaks_mib": [x["peak_rss_mib"] for x in results]}
        if "gpu_peak_mib" in results[0]:
            cell["gpu_peak_mib"] = benchlib.median(x["gpu_peak_mib"] for x in results)
        table[impl][strategy] = cell
    checks = {}
    for impl in impls:
        full = table[impl]["full"]["train_overhead_mib"]
        for s in strategies[1:]:
            checks[f"{impl}:{s}_below_full"] = table[impl][s]["train_overhead_mib"] < full
    benchlib.emit({
        "benchmark": "memory",
        "machine": benchlib.machine(),
        "config": {"model": "wide (random, ViT-B widths)" if args.wide else args.model, "batch": args.batch, "steps": args.steps, "repeats": repeats,
                   "threads": args.threads, "quick": args.quick, "measure": "peak RSS (ru_maxrss) of a fresh process"},
        "idle_peak_rss_mib": round(idle_peak, 1),
        "peaks": table,
        "checks": checks,
    }, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Audit wall time: ``run_audit`` against a notebook loop that re-encodes the images for every prompt.

Both sides start from the data source and the model reference, load them, embed, compute
every metric of the audit (bootstrap included, the same ``compute_audit``) and write the
result. The only difference is the embedding: ours decodes and encodes each image once and
every prompt once (batched, ``torch.inference_mode``); the baseline calls
``CLIPModel(**processor(text=[prompt], images=batch))`` for each prompt, as a notebook that
scores images prompt by prompt does. The two results tables are compared value by value.

A scaling table follows (ours only): audit time as the images grow (linear expected) and as
the prompts grow through a prompt ensemble (text encoding only: nearly flat expected).

    python bench/audit_speed.py --quick
    python bench/audit_speed.py
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
import tempfile
import time
from pathlib import Path

import benchlib


def ours(spec, model: str, data, split: str, n_boot: int | None, out: str):
    from workbench.audit.runner import run_audit

    return run_audit(spec, model, data, split=split, output=out, cache_dir=None, n_boot=n_boot, progress=False)


def naive(spec, model: str, data, split: str, n_boot: int | None, out: str, batch_size: int = 256):
    """Score every image against each prompt with CLIPModel's forward, one prompt at a time."""
    import numpy as np
    import torch
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    from workbench.audit.core import ModelEmbeddings, compute_audit, group_prompts_needed, prompts_needed
    from workbench.audit.runner import load_audit_data, write_audit
    from workbench.models import resolve_model_path

    path = resolve_model_path(model)
    clip = CLIPModel.from_pretrained(path, use_safetensors=True).eval()
    processor = CLIPProcessor.from_pretrained(path)
    audit_data = load_audit_data(data, spec, split=split)
    dataset, n = audit_data.dataset, len(audit_data.dataset)
    prompts = list(dict.fromkeys(prompts_needed(spec, audit_data.class_labels) + group_prompts_needed(spec, audit_data.table)))
    text, image = {}, None
    with torch.no_grad():
        for prompt in prompts:
            rows = []
            for start in range(0, n, batch_size):
                values = dataset[start : start + batch_size]["image"]
                images = [v.convert("RGB") if isinstance(v, Image.Image) else Image.open(io.BytesIO(v["bytes"])).convert("RGB") for v in values]
                outputs = clip(**processor(text=[prompt], images=images, return_tensors="pt", padding=True))
                rows.append(outputs.image_embeds)
            text[prompt] = outputs.text_embeds[0].numpy()
            image = torch.cat(rows).numpy()
    embeddings = {"model": ModelEmbeddings(image=np.ascontiguousarray(image, dtype=np.float32), text=text, model=model)}
    info = dict(audit_data.info, n=n, n_undecodable=0)
    result = compute_audit(spec, audit_data.table, embeddings, class_labels=audit_data.class_labels, data_info=info,
                           n_boot=n_boot, warnings=audit_data.warnings)
    write_audit(result, out)
    return result


def ours_stages(spec, model: str, data, split: str, n_boot: int | None) -> dict:
    """Seconds of each stage of ``run_audit`` (its public pieces, called in the same order)."""
    from workbench.audit.core import ModelEmbeddings, compute_audit, group_prompts_needed, prompts_needed
    from workbench.audit.runner import embed_for_audit, load_audit_data
    from workbench.models import load_clip

    stages = {}
    t, d = benchlib.timed(lambda: load_audit_data(data, spec, split=split))
    stages["load_data"] = t
    t, (clip, processor) = benchlib.timed(lambda: load_clip(model))
    stages["load_model"] = t
    prompts = list(dict.fromkeys(prompts_needed(spec, d.class_labels) + group_prompts_needed(spec, d.table)))
    t, (image, text, valid, _) = benchlib.timed(lambda: embed_for_audit(clip, processor, d, prompts, cache_dir=None, progress=False))
    stages["embed_images_once_and_prompts"] = t
    emb = {"model": ModelEmbeddings(image=image[valid], text={p: text[i] for i, p in enumerate(prompts)}, model=model)}
    t, _ = benchlib.timed(lambda: compute_audit(spec, d.table[valid].reset_index(drop=True), emb,
                                                class_labels=d.class_labels, n_boot=n_boot))
    stages["compute_metrics_and_bootstrap"] = t
    return {k: round(v, 3) for k, v in stages.items()}


def compare_results(a, b) -> dict:
    import numpy as np

    keys = ["model", "metric", "attribute", "group", "label", "prompt", "k", "target"]
    merged = a.results.merge(b.results, on=keys, suffixes=("_ours", "_naive"))
    x, y = merged["value_ours"].to_numpy(float), merged["value_naive"].to_numpy(float)
    both = ~(np.isnan(x) | np.isnan(y))
    diff = np.abs(x[both] - y[both])
    return {"rows_ours": len(a.results), "rows_naive": len(b.results), "rows_matched": len(merged),
            "max_abs_value_diff": float(diff.max()) if diff.size else 0.0,
            "rows_differing_over_1e-4": int((diff > 1e-4).sum()),
            "nan_pattern_equal": bool((np.isnan(x) == np.isnan(y)).all())}


def audit_size(spec, data, split: str) -> tuple[int, int]:
    """(images, distinct prompts) the audit of ``data`` works on."""
    from workbench.audit.core import group_prompts_needed, prompts_needed
    from workbench.audit.runner import load_audit_data

    d = load_audit_data(data, spec, split=split)
    return len(d.dataset), len(dict.fromkeys(prompts_needed(spec, d.class_labels) + group_prompts_needed(spec, d.table)))


def generated_split(n: int, seed: int) -> str:
    """A folder holding a generated demo split ``test`` of ``n`` rows (made once, reused)."""
    import datasets

    from workbench.demo.derm import generate_derm
    from workbench.io import atomic_dir
    from workbench.paths import data_home

    folder = data_home() / "bench" / f"derm-test-{n}-seed{seed}"
    if not (folder / "dataset_dict.json").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with atomic_dir(folder) as tmp:
            datasets.DatasetDict({"test": generate_derm({"test": n}, seed=seed)["test"]}).save_to_disk(str(tmp))
    return str(folder)


def ensemble_spec(base, templates: int):
    """``base`` with ``templates`` class templates, one harmful template, two skew prompts, no group prompts.

    Prompts = 4 x templates + 4 + 2: only text encoding grows, the metrics stay the same.
    """
    from workbench.audit.spec import HarmfulSpec

    stock = list(base.classes.templates)
    made = [stock[i % len(stock)].replace("{}", "{}" + (f" (view {i // len(stock)})" if i >= len(stock) else "")) for i in range(templates)]
    return dataclasses.replace(
        base,
        classes=dataclasses.replace(base.classes, templates=tuple(made)),
        skew=dataclasses.replace(base.skew, prompts=base.skew.prompts[:2]),
        group_prompts=(),
        harmful=HarmfulSpec(labels=base.harmful.labels, templates=("{}",)),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audit", default=str(benchlib.REPO / "audits" / "derm_demo.yaml"))
    parser.add_argument("--model", default="workbench/demo-clip")
    parser.add_argument("--data", default="workbench/demo-derm")
    parser.add_argument("--split", default="test")
    parser.add_argument("--images", type=int, default=None, help="audit only the first N rows (default all; quick 120)")
    parser.add_argument("--n-boot", type=int, default=None, help="bootstrap resamples (default: the audit's own)")
    parser.add_argument("--scale-images", default=None, help="image counts of the scaling table (default 1000,4000,16000)")
    parser.add_argument("--scale-prompts", default=None, help="prompt counts of the scaling table (default 10,100,1000)")
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling table")
    benchlib.add_common_args(parser, quick_help="120 images, 2 repeats, a small scaling table: under 2 minutes")
    args = parser.parse_args(argv)
    benchlib.configure(args.threads)
    from workbench.audit.spec import load_audit_spec
    from workbench.data import ColumnMap, load_splits

    spec = load_audit_spec(args.audit)
    repeats = args.repeats or (2 if args.quick else 3)
    images = args.images or (120 if args.quick else None)
    data = args.data
    if images:
        columns = ColumnMap(caption=None, groups=spec.group_columns)
        full = load_splits(args.data, columns, splits=[args.split])[args.split]
        data = full.select(range(min(images, len(full))))
    n_images, n_prompts = audit_size(spec, data, args.split)
    tmp = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    results = {}
    cpu_seconds: dict[str, list[float]] = {"naive": [], "ours": []}  # process CPU time: steadier on a shared machine

    def side(name, fn):
        def run():
            c0 = time.process_time()
            results[name] = fn(spec, args.model, data, args.split, args.n_boot, str(tmp / name))
            cpu_seconds[name].append(time.process_time() - c0)
        return run

    # Warm-up: a tiny audit through both paths (imports, first allocations).
    if images is None:
        columns = ColumnMap(caption=None, groups=spec.group_columns)
        warm_data = load_splits(args.data, columns, splits=[args.split])[args.split].select(range(60))
    else:
        warm_data = data.select(range(min(60, len(data))))
    warm_spec = ensemble_spec(spec, 1)
    ours(warm_spec, args.model, warm_data, args.split, 10, str(tmp / "warm-ours"))
    naive(warm_spec, args.model, warm_data, args.split, 10, str(tmp / "warm-naive"))

    raw = benchlib.alternate({"naive": side("naive", naive), "ours": side("ours", ours)}, repeats=repeats, warmup=0)
    t_naive = benchlib.median(t for t, _ in raw["naive"])
    t_ours = benchlib.median(t for t, _ in raw["ours"])
    speedup = benchlib.ratio(t_naive, t_ours)
    head = {
        "images": n_images,
        "prompts": n_prompts,
        "naive_s": [round(t, 3) for t, _ in raw["naive"]],
        "ours_s": [round(t, 3) for t, _ in raw["ours"]],
        "naive_median_s": round(t_naive, 3),
        "ours_median_s": round(t_ours, 3),
        "speedup": speedup,
        "naive_cpu_s": [round(t, 3) for t in cpu_seconds["naive"]],
        "ours_cpu_s": [round(t, 3) for t in cpu_seconds["ours"]],
        "speedup_cpu_time": benchlib.ratio(benchlib.median(cpu_seconds["naive"]), benchlib.median(cpu_seconds["ours"])),
        "target_speedup": n_prompts / 2,
        "target_met": speedup is not None and speedup >= n_prompts / 2,
        "same_results": compare_results(results["ours"], results["naive"]),
        "ours_stages_s": ours_stages(spec, args.model, data, args.split, args.n_boot),
    }

    scaling = {}
    if not args.no_scaling:
        img_counts = [int(x) for x in (args.scale_images or ("250,500,1000" if args.quick else "1000,4000,16000")).split(",")]
        prompt_counts = [int(x) for x in (args.scale_prompts or "10,100,1000").split(",")]
        scaling["images"] = []
        for n in img_counts:
            folder = generated_split(n, seed=11)
            t, _ = benchlib.timed(lambda: ours(spec, args.model, folder, "test", args.n_boot, str(tmp / f"img-{n}")))
            scaling["images"].append({"images": n, "prompts": audit_size(spec, folder, "test")[1], "seconds": round(t, 3),
                                      "ms_per_image": round(1000 * t / n, 3)})
        prompt_images = img_counts[0]
        folder = generated_split(prompt_images, seed=11)
        scaling["prompts"] = []
        # Texts every audit encodes whatever the templates (neutral and control prompts, harmful
        # labels): measured, so each row's template count lands its total nearest the target.
        per_template = len(spec.classes.labels or ()) or 4
        fixed = audit_size(ensemble_spec(spec, 1), folder, "test")[1] - per_template
        for target in prompt_counts:
            sp = ensemble_spec(spec, max(1, round((target - fixed) / per_template)))
            t, _ = benchlib.timed(lambda: ours(sp, args.model, folder, "test", args.n_boot, str(tmp / f"prompts-{target}")))
            scaling["prompts"].append({"images": prompt_images, "prompts": audit_size(sp, folder, "test")[1], "seconds": round(t, 3)})

    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    benchlib.emit({
        "benchmark": "audit_speed",
        "machine": benchlib.machine(),
        "config": {"audit": Path(args.audit).name, "model": args.model, "data": args.data, "split": args.split,
                   "images": images or "all", "n_boot": args.n_boot or spec.bootstrap.n_boot, "repeats": repeats,
                   "threads": args.threads, "quick": args.quick},
        "headline": head,
        "scaling": scaling,
    }, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

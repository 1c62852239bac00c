"""The audit against the Hugging Face ``zero-shot-image-classification`` pipeline looped over its prompts.

What a user without the workbench would write to get the scores an audit is built on:
``pipeline("zero-shot-image-classification", model=...)`` called over the audited images once
per prompt set of the audit, with the images decoded once into a list of PIL images and the
pipeline batching images (``--pipeline-batch``):

* one call per class template: candidate labels = that template filled with every class
  (and every harmful label, which the audit mixes into the label set), so the pipeline's
  top label is the per-template zero-shot prediction;
* one call for every other prompt the audit encodes (neutral concept prompts, control
  prompts, group prompts, anything data-dependent), which gives each image's score for each.

That is the fewest image passes the pipeline allows (it re-encodes the images in every call,
and the candidate texts in every batch). ``--loop per-image`` instead calls the pipeline once
per image and prompt set, ``classify(image, candidate_labels=...)``, the usage the Hugging Face
task guide shows; the candidate texts are then encoded again for every image. The pipeline side stops there: it has scores, not
the audit's tables. Ours is the whole ``run_audit``: load, embed each image and prompt once,
every metric with its bootstrap and permutation test, write the result folder. So the ratio
is conservative for ours.

Same numbers: per call, the pipeline's top label for every image is compared with the argmax
of ours (the workbench's embeddings, the same prompts), and the pipeline's scores (softmax
over the call's candidates) with ``softmax(logit_scale * cosine)`` from ours.

    python bench/audit_vs_pipeline.py --quick
    python bench/audit_vs_pipeline.py --output bench/results/audit_vs_pipeline.json
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile

import benchlib

TARGET = 20.0


def prompt_calls(spec, class_labels: list[str], all_prompts: list[str]) -> list[list[str]]:
    """The pipeline calls: candidate texts per call (one call per class template, then the rest).

    Every prompt of ``all_prompts`` lands in exactly one call.
    """
    per_label = [spec.classes.prompts_for(label) for label in class_labels]
    harmful = spec.harmful
    if harmful is not None and harmful.labels:
        per_label += [harmful.prompts_for(h, spec.classes.templates) for h in harmful.labels]
    calls: list[list[str]] = []
    counts = {len(p) for p in per_label}
    if len(counts) == 1:  # the same number of prompts per label: one call per template position
        for j in range(counts.pop()):
            calls.append(list(dict.fromkeys(p[j] for p in per_label)))
    else:  # explicit prompts of different counts: all zero-shot prompts in one call
        calls.append(list(dict.fromkeys(x for p in per_label for x in p)))
    covered = {x for call in calls for x in call}
    rest = [p for p in all_prompts if p not in covered]
    if rest:
        calls.append(rest)
    missing = set(all_prompts) - {x for call in calls for x in call}
    if missing:
        raise AssertionError(f"prompts left out of every call: {sorted(missing)[:3]}")
    return calls


def decode_all(dataset) -> list:
    """Every image of the split as an RGB PIL image (what ``ds["image"]`` gives a user)."""
    from PIL import Image

    out = []
    for start in range(0, len(dataset), 512):
        for value in dataset[start : start + 512]["image"]:
            image = value if isinstance(value, Image.Image) else Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
            out.append(image.convert("RGB"))
    return out


LOOPS = ("batched", "per-image")


def pipeline_side(model_dir: str, audit_data, calls: list[list[str]], batch: int, device: str,
                  loop: str = "batched") -> list:
    """Build the pipeline, decode the images once, run every call; returns per call the pipeline's outputs.

    ``batched``: one pipeline call per prompt set over all images; ``per-image``: one call per
    image and prompt set. Either way the result per prompt set is one ranked list per image.
    """
    from transformers import pipeline

    classify = pipeline("zero-shot-image-classification", model=model_dir, device=device)
    images = decode_all(audit_data.dataset)
    if loop == "per-image":
        return [[classify(image, candidate_labels=call, hypothesis_template="{}") for image in images] for call in calls]
    return [classify(images, candidate_labels=call, hypothesis_template="{}", batch_size=batch) for call in calls]


def ours_side(spec, model: str, data, split: str, out: str):
    from workbench.audit.runner import run_audit

    return run_audit(spec, model, data, split=split, output=out, cache_dir=None, progress=False)


def compare(outputs: list, calls: list[list[str]], model: str, audit_data) -> dict:
    """Top label and scores of the pipeline against the workbench's embeddings, call by call."""
    import numpy as np
    import torch

    from workbench.audit.runner import embed_for_audit
    from workbench.models import load_clip

    clip, processor = load_clip(model)
    prompts = list(dict.fromkeys(p for call in calls for p in call))
    image, text, valid, bad = embed_for_audit(clip, processor, audit_data, prompts, cache_dir=None, progress=False)
    if bad:
        raise RuntimeError(f"{len(bad)} undecodable images; the comparison needs every row")
    image = image / np.linalg.norm(image, axis=1, keepdims=True)
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    scale = float(clip.logit_scale.detach().exp())
    index = {p: i for i, p in enumerate(prompts)}
    per_call, same_top, total, max_diff = [], 0, 0, 0.0
    for call, result in zip(calls, outputs):
        logits = scale * image @ text[[index[p] for p in call]].T
        ours_scores = torch.softmax(torch.as_tensor(logits, dtype=torch.float64), dim=1).numpy()
        ours_top = logits.argmax(axis=1)
        pipe_scores = np.zeros_like(ours_scores)
        for row, ranked in enumerate(result):
            for entry in ranked:
                pipe_scores[row, call.index(entry["label"])] = entry["score"]
        pipe_top = np.array([call.index(ranked[0]["label"]) for ranked in result])
        agree = int((pipe_top == ours_top).sum())
        diff = float(np.abs(pipe_scores - ours_scores).max())
        per_call.append({"candidates": len(call), "first": call[0], "same_top_label": agree, "images": len(result),
                         "max_abs_score_diff": diff})
        same_top += agree
        total += len(result)
        max_diff = max(max_diff, diff)
    return {"calls": per_call, "same_top_label": same_top, "predictions": total, "all_same": same_top == total,
            "max_abs_score_diff": max_diff}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audit", default=str(benchlib.REPO / "audits" / "derm_demo.yaml"))
    parser.add_argument("--model", default="workbench/demo-clip")
    parser.add_argument("--data", default="workbench/demo-derm")
    parser.add_argument("--split", default="test")
    parser.add_argument("--images", type=int, default=None, help="audit only the first N rows (default all; quick 200)")
    parser.add_argument("--pipeline-batch", type=int, default=64, help="images per pipeline batch (--loop batched)")
    parser.add_argument("--loop", choices=LOOPS, default="batched",
                        help="batched: one pipeline call per prompt set over all images (the fewest passes); "
                             "per-image: one call per image and prompt set, as in the Hugging Face task guide")
    parser.add_argument("--quick", action="store_true", help="200 images, one repeat: about a minute")
    parser.add_argument("--threads", type=int, default=0,
                        help="intra-op threads on both sides (default 0: every available core)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats of each side (default 3; quick 1)")
    parser.add_argument("--output", default=None, help="also write the JSON to this file")
    args = parser.parse_args(argv)
    threads = args.threads if args.threads > 0 else len(os.sched_getaffinity(0))
    benchlib.configure(threads)
    import dataclasses

    from workbench.audit.core import group_prompts_needed, prompts_needed
    from workbench.audit.runner import load_audit_data
    from workbench.audit.spec import load_audit_spec
    from workbench.models import resolve_model_path

    spec = load_audit_spec(args.audit)
    images = args.images or (200 if args.quick else None)
    repeats = args.repeats or (1 if args.quick else 3)
    data = args.data
    if images:
        from workbench.data import ColumnMap, load_splits

        columns = ColumnMap(groups=tuple(a.column for a in spec.attributes))
        split = load_splits(args.data, columns, splits=[args.split])[args.split]
        data = split.select(range(min(images, len(split))))
    if images and spec.skew is not None and max(spec.skew.k) >= images:
        spec = dataclasses.replace(spec, skew=dataclasses.replace(spec.skew, k=tuple(k for k in (10, 20) if k < images)))
    audit_data = load_audit_data(data, spec, split=args.split)
    prompts = list(dict.fromkeys(prompts_needed(spec, audit_data.class_labels) + group_prompts_needed(spec, audit_data.table)))
    calls = prompt_calls(spec, audit_data.class_labels, prompts)
    model_dir = resolve_model_path(args.model)
    device = "cuda" if __import__("torch").cuda.is_available() else "cpu"
    out_dir = tempfile.mkdtemp(prefix="audit-vs-pipeline-")
    outputs = {}

    def run_pipeline():
        outputs["pipeline"] = pipeline_side(model_dir, load_audit_data(data, spec, split=args.split), calls, args.pipeline_batch, device,
                                           args.loop)

    sides = {"pipeline": run_pipeline, "run_audit": lambda: ours_side(spec, args.model, data, args.split, out_dir)}
    raw = benchlib.alternate(sides, repeats=repeats, warmup=1)
    pipe_s = benchlib.median(t for t, _ in raw["pipeline"])
    ours_s = benchlib.median(t for t, _ in raw["run_audit"])
    same = compare(outputs["pipeline"], calls, args.model, audit_data)
    ratio = benchlib.ratio(pipe_s, ours_s)
    benchlib.emit({
        "benchmark": "audit_vs_pipeline",
        "machine": benchlib.machine(),
        "config": {"audit": args.audit, "model": args.model, "data": args.data if not images else f"{args.data} (first {images})",
                   "split": args.split, "images": len(audit_data.dataset), "prompts": len(prompts),
                   "pipeline_calls": len(calls), "candidates_per_call": [len(c) for c in calls],
                   "pipeline_loop": args.loop, "pipeline_batch": args.pipeline_batch, "threads": threads, "repeats": repeats, "quick": args.quick},
        "pipeline_s": [round(t, 3) for t, _ in raw["pipeline"]],
        "run_audit_s": [round(t, 3) for t, _ in raw["run_audit"]],
        "pipeline_median_s": round(pipe_s, 3),
        "run_audit_median_s": round(ours_s, 3),
        "speedup": ratio,
        "target": TARGET,
        "target_met": ratio is not None and ratio >= TARGET,
        "same_predictions": same,
    }, args.output)
    shutil.rmtree(out_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

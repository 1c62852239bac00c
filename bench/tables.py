"""Markdown tables for BENCHMARKS.md from the JSON the benchmark scripts write (``--output``).

    python bench/tables.py out/train.json out/memory.json out/audit.json out/data.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _fmt(x, nd=1):
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def train_table(r: dict) -> str:
    lines = ["| strategy | baseline ep1 | ours ep1 | baseline ep2+ | ours ep2+ | ratio ep2+ (wall) | ratio ep2+ (CPU time) "
             "| ratio whole run (wall) | target ep2+ | met |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s, row in r["strategies"].items():
        b, o = row["baseline"]["wall"], row["ours"]["wall"]
        lines.append(f"| {s} | {_fmt(b['epoch1_samples_per_s'])} | {_fmt(o['epoch1_samples_per_s'])} | "
                     f"{_fmt(b['epoch2plus_samples_per_s'])} | {_fmt(o['epoch2plus_samples_per_s'])} | "
                     f"**{_fmt(row['wall']['ratio_epoch2plus'], 2)}x** | {_fmt(row['cpu']['ratio_epoch2plus'], 2)}x | "
                     f"{_fmt(row['wall']['ratio_run'], 2)}x | >= {_fmt(row.get('target_epoch2plus'), 1)}x | {_fmt(row.get('target_met'))} |")
    frozen = r["strategies"].get("frozen-image")
    if frozen and "ours_no_cache" in frozen:
        lines.append("")
        lines.append(f"Frozen image tower, ours with vs without the image-embedding cache, epochs 2+: "
                     f"{_fmt(frozen['ours']['wall']['epoch2plus_samples_per_s'])} vs "
                     f"{_fmt(frozen['ours_no_cache']['wall']['epoch2plus_samples_per_s'])} samples/s "
                     f"= **{_fmt(frozen['wall']['cache_speedup_epoch2plus'], 2)}x** per epoch "
                     f"({_fmt(frozen['cpu']['cache_speedup_epoch2plus'], 2)}x in CPU time).")
    c = r["same_loss_check"]
    lines.append("")
    lines.append(f"Same work: loss of one batch through both paths {c['baseline_loss']} vs {c['ours_loss']} "
                 f"(|diff| {c['abs_diff']:.1e}); text width per batch {c['baseline_text_width']} (baseline, max length) "
                 f"vs {c['ours_text_width']} (ours, longest caption).")
    return "\n".join(lines)


def memory_table(r: dict) -> str:
    impls = list(r["peaks"])
    head = "| strategy | " + " | ".join(f"{i} peak RSS MiB | {i} training overhead MiB" for i in impls) + " |"
    lines = [head, "|---|" + "---|---|" * len(impls)]
    for s in r["peaks"][impls[0]]:
        cells = []
        for i in impls:
            c = r["peaks"][i][s]
            cells += [_fmt(c["peak_rss_mib"]), _fmt(c["train_overhead_mib"])]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Idle process (same imports, model and data loaded, no training): {r['idle_peak_rss_mib']} MiB. "
                 "Checks: " + ", ".join(f"{k} {_fmt(v)}" for k, v in r["checks"].items()) + ".")
    return "\n".join(lines)


def audit_table(r: dict) -> str:
    h = r["headline"]
    lines = ["| images | prompts | naive loop (s) | run_audit (s) | speed-up (wall) | speed-up (CPU time) | target (prompts / 2) | met |",
             "|---|---|---|---|---|---|---|---|",
             f"| {h['images']} | {h['prompts']} | {_fmt(h['naive_median_s'])} | {_fmt(h['ours_median_s'])} | "
             f"**{_fmt(h['speedup'], 1)}x** | {_fmt(h.get('speedup_cpu_time'), 1)}x | {_fmt(h['target_speedup'], 1)}x | {_fmt(h['target_met'])} |"]
    st = h.get("ours_stages_s")
    if st:
        lines.append("")
        lines.append("run_audit stages (s): " + ", ".join(f"{k} {v}" for k, v in st.items()) + ".")
    same = h["same_results"]
    lines.append("")
    lines.append(f"Same results: {same['rows_matched']} of {same['rows_ours']} result rows matched, largest |value diff| "
                 f"{same['max_abs_value_diff']:.1e}, NaN pattern equal: {_fmt(same['nan_pattern_equal'])}.")
    sc = r.get("scaling") or {}
    if sc.get("images"):
        lines += ["", "| images | prompts | run_audit (s) | ms per image |", "|---|---|---|---|"]
        lines += [f"| {x['images']} | {x['prompts']} | {_fmt(x['seconds'])} | {_fmt(x['ms_per_image'], 2)} |" for x in sc["images"]]
    if sc.get("prompts"):
        lines += ["", "| images | prompts | run_audit (s) |", "|---|---|---|"]
        lines += [f"| {x['images']} | {x['prompts']} | {_fmt(x['seconds'])} |" for x in sc["prompts"]]
    return "\n".join(lines)


def data_table(r: dict) -> str:
    rates = r["images_per_s"]
    lines = ["| path | images/s |", "|---|---|"]
    names = {"decode_once": "decode + resize once (per split, one time)",
             "batch_delivery": "per-batch delivery (index, normalise, pad)",
             "per_example": "run_clip.py-style per-example decode + processor + collate",
             "model_step": "model: full fine-tuning step (samples/s)"}
    lines += [f"| {names[k]} | {_fmt(v)} |" for k, v in rates.items()]
    lines.append("")
    lines.append(f"Delivery / model = **{_fmt(r['delivery_over_model'], 1)}x** (the loader adds "
                 f"{100 * r['loader_share_of_step']:.1f}% to a step); per-example path / model = {_fmt(r['per_example_over_model'], 2)}x; "
                 f"loader is the bottleneck: {_fmt(r['loader_is_bottleneck'])}.")
    return "\n".join(lines)


def ranking_table(r: dict) -> str:
    lines = ["| images | bootstrap | full scan (s) | prefix scan (s) | speed-up | identical |", "|---|---|---|---|---|---|"]
    lines += [f"| {x['images']} | {x['n_boot']} | {x['current_s']} | {x['prefix_s']} | {_fmt(x['speedup'], 1)}x | {_fmt(x['identical'])} |"
              for x in r["rows"]]
    return "\n".join(lines)


def peer_table(r: dict) -> str:
    """openclip_peer.py: each side's steady rates and peaks, then ours against open_clip."""
    lines = ["| side | samples/s, 3 - 1 epochs (wall) | samples per CPU-second | samples/s from its log, epochs 2+ "
             "| peak RSS MiB (main) | peak RSS MiB (process tree) |", "|---|---|---|---|---|---|"]
    for name, side in r["sides"].items():
        lines.append(f"| {name} | {_fmt(side['samples_per_s'])} | {_fmt(side['samples_per_cpu_s'])} | "
                     f"{_fmt(side.get('logged_samples_per_s'))} | {_fmt(side['peak_rss_mib'])} | {_fmt(side['peak_tree_rss_mib'])} |")
    lines += ["", "| ours | against | ratio (wall) | ratio (CPU time) | ratio (logs) | per repeat (wall) | peak RSS ours / theirs "
                  "| target | met (wall) |", "|---|---|---|---|---|---|---|---|---|"]
    for s, c in r["comparisons"].items():
        lines.append(f"| {s} | {c['open_clip']} | **{_fmt(c['ratio'], 2)}x** | {_fmt(c.get('ratio_cpu_time'), 2)}x | "
                     f"{_fmt(c.get('ratio_logged_steps'), 2)}x | {', '.join(_fmt(x, 2) for x in c['per_repeat_ratios'])} | "
                     f"{_fmt(c.get('peak_rss_ratio'), 2)} | >= {_fmt(c['target'], 1)}x | {_fmt(c['target_met'])} |")
    probe = r.get("open_clip_worker_probe") or {}
    if probe:
        lines += ["", "open_clip data workers tried (full, epoch 2 from its log): " + ", ".join(
            f"{w}: {_fmt(p.get('logged_samples_per_s'))} samples/s" for w, p in probe.items())
            + f"; used: {r['config']['open_clip_workers']}."]
    return "\n".join(lines)


def pipeline_table(r: dict) -> str:
    """audit_vs_pipeline.py: the pipeline loop against run_audit, and whether they agree."""
    c = r["config"]
    same = r["same_predictions"]
    lines = ["| images | prompts | pipeline calls | pipeline loop (s) | run_audit (s) | speed-up | target | met |",
             "|---|---|---|---|---|---|---|---|",
             f"| {c['images']} | {c['prompts']} | {c['pipeline_calls']} | {_fmt(r['pipeline_median_s'])} | "
             f"{_fmt(r['run_audit_median_s'])} | **{_fmt(r['speedup'], 1)}x** | >= {_fmt(r['target'], 0)}x | {_fmt(r['target_met'])} |",
             "", f"Repeats: pipeline {', '.join(_fmt(x) for x in r['pipeline_s'])} s; run_audit "
             f"{', '.join(_fmt(x) for x in r['run_audit_s'])} s. Same predictions: {same['same_top_label']} of "
             f"{same['predictions']} top labels equal (every call, every image), largest score difference "
             f"{same['max_abs_score_diff']:.1e}."]
    return "\n".join(lines)


def real_size_table(r: dict) -> str:
    """real_size.py: each cell's epoch-2 rate and peak RSS; then the memory a step holds."""
    lines = []
    if r.get("cells"):
        lines += ["| impl | strategy | precision | gradient checkpointing | samples/s (wall) | samples per CPU-second "
                  "| peak RSS MiB |", "|---|---|---|---|---|---|---|"]
        for x in r["cells"]:
            lines.append(f"| {x['impl']} | {x['strategy']} | {x['precision']} | {_fmt(x['gradient_checkpointing'])} | "
                         f"{_fmt(x['samples_per_s_epoch2'], 2)} | {_fmt(x['samples_per_cpu_s_epoch2'], 2)} | {_fmt(x['peak_rss_mib'])} |")
    mb = r.get("memory_budget")
    if mb:
        lines += ["", f"What one step holds at batch {mb['batch']} (MiB; activations = tensors autograd keeps for backward):", "",
                  "| strategy | trainable parameters | weights | gradients | AdamW state | activations | activations, checkpointed |",
                  "|---|---|---|---|---|---|---|"]
        for s in ("full", "frozen-image", "lora"):
            x = mb[s]
            lines.append(f"| {s} | {x['trainable']:,} | {_fmt(x['weights_mib'])} | {_fmt(x['gradients_mib'])} | "
                         f"{_fmt(x['adamw_state_mib'])} | {_fmt(x['activations_mib'])} | {_fmt(x.get('activations_checkpointed_mib'))} |")
    return "\n".join(lines)


RENDER = {"train_throughput": train_table, "memory": memory_table, "audit_speed": audit_table,
          "data_pipeline": data_table, "ranking_prefix": ranking_table, "openclip_peer": peer_table,
          "audit_vs_pipeline": pipeline_table, "real_size": real_size_table}


def main(argv: list[str] | None = None) -> int:
    for path in (argv if argv is not None else sys.argv[1:]):
        r = json.loads(Path(path).read_text())
        m = r["machine"]
        print(f"### {r['benchmark']} ({Path(path).name})\n")
        print(f"{m['date']}; {m['cpu']} x {m['cpu_count']}; load average {m['load_average']}; torch threads {m['torch_threads']}\n")
        print(RENDER[r["benchmark"]](r))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

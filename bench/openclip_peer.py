"""Training throughput against the real peer: open_clip's own trainer (``open_clip_train.main``).

Both sides train the same model dimensions on the same images and captions, side by side,
alternating, each in a fresh process:

* data: the 3000 demo training images written out once as PNG files plus ``train.csv``
  (path, caption, label, skin tone, sex), the form open_clip's ``csv`` data set reads; the
  workbench reads the same CSV (``--dataset <folder>/train.csv``).
* model: the demo CLIP's dimensions (``.data/demo-clip/config.json``) registered as an
  open_clip model config (``demo-clip``): ViT 64 px / patch 8, 3 layers, width 96, 4 heads
  per tower, 40-token context, quick GELU, EOS pooling, the demo's own tokenizer (open_clip's
  ``HFTokenizer`` on the same folder). Random initial weights on the open_clip side (speed
  does not depend on them); parameter counts are checked equal.
* work: batch 64, fp32, AdamW (lr 1e-5, wd 0.1, betas 0.9 / 0.98, eps 1e-6), no warm-up,
  gradient-norm clip 1.0, no validation, no zero-shot, no checkpoints, on the CPU.
* threads: every available core on both sides, set explicitly (``torch.set_num_threads`` and
  ``OMP_NUM_THREADS`` for open_clip; ``--cpu-threads`` for the recipe). open_clip runs at its
  best data-worker count for this machine: 0, 1 and 2 workers are tried first (a 2-epoch
  run each, epoch 2's rate from open_clip's log) and the fastest is used.
* pairs: full vs full; frozen image tower (``--strategy frozen-image``) vs open_clip's
  ``--lock-image``; LoRA (``--strategy lora``, open_clip has none) vs open_clip full.

Steady state = wall time of a 3-epoch run minus that of a 1-epoch run of the same side
(start-up, data set-up and the final save cancel); samples/s = 2 x 2944 / difference
(46 full batches of 64 per epoch on both sides); the same difference in CPU time (process
plus reaped children). Also from each side's own log of the long run, epochs 2+: ours'
``train_log.jsonl`` (one record per epoch), open_clip's mean step time on each epoch's last
log line (which leaves out each epoch's first step, in open_clip's favour). On a loaded
machine the log-based and CPU-time rates are the steadier ones. Peak memory: the main process's peak RSS
(``wait4``) and the peak summed RSS of the process tree (sampled every 0.1 s; includes data
workers). JSON to stdout and ``--output``.

open_clip needs torchvision, which cannot load beside the project's torch 2.13.0, so this
runs in a separate virtual environment that holds both sides (same torch on both):

    python3.11 -m venv /work/bench-venv
    /work/bench-venv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /work/bench-venv/bin/pip install -e '.[bench]'          # the workbench + open_clip_torch
    /work/bench-venv/bin/python bench/openclip_peer.py --quick
    /work/bench-venv/bin/python bench/openclip_peer.py --workers 0 --output bench/results/openclip_peer.json
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import benchlib

OURS = {"full": "full", "frozen-image": "frozen-image", "lora": "lora"}
# open_clip's counterpart of each of ours: open_clip has no LoRA, so LoRA is compared with its full run.
PEER_OF = {"full": "full", "frozen-image": "lock-image", "lora": "full"}
TARGETS = {"full": 1.5, "frozen-image": 5.0, "lora": 1.5}
LR, WD, BETA2, EPS, CLIP_NORM = 1e-5, 0.1, 0.98, 1e-6, 1.0


# ---------------------------------------------------------------------------- shared inputs


def write_peer_data(folder: Path, n: int | None) -> Path:
    """PNG files and ``train.csv`` of the demo train split (first ``n`` rows), written once."""
    from PIL import Image

    from workbench.data import ColumnMap, load_splits
    from workbench.io import atomic_dir

    csv_path = folder / "train.csv"
    if csv_path.is_file():
        return csv_path
    split = load_splits("workbench/demo-derm", ColumnMap(groups=("skin_tone", "sex")), splits=["train"])["train"]
    if n:
        split = split.select(range(min(n, len(split))))
    with atomic_dir(folder) as tmp:
        (tmp / "images").mkdir()
        rows = []
        for i, row in enumerate(split):
            name = f"images/{i:05d}.png"
            value = row["image"]  # undecoded: {"bytes": ..., "path": ...}
            data = value["bytes"] if value.get("bytes") is not None else Path(value["path"]).read_bytes()
            if data[:8] == b"\x89PNG\r\n\x1a\n":
                (tmp / name).write_bytes(data)  # the demo's own PNG bytes, unchanged
            else:
                Image.open(io.BytesIO(data)).convert("RGB").save(tmp / name)
            rows.append({"filepath": str(folder / name), "title": row["caption"], "label": row["label"],
                         "skin_tone": row["skin_tone"], "sex": row["sex"]})
        with open(tmp / "train.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return csv_path


def open_clip_config(hf_config: dict, tokenizer_dir: str) -> dict:
    """The open_clip model config with the dimensions of a Hugging Face ``CLIPConfig`` dict."""
    v, t = hf_config["vision_config"], hf_config["text_config"]
    for tower, cfg in (("vision", v), ("text", t)):
        if cfg.get("hidden_act", "quick_gelu") != "quick_gelu":
            raise ValueError(f"{tower} tower uses {cfg['hidden_act']}; open_clip's CLIP here is built with quick GELU")
    return {
        "embed_dim": hf_config["projection_dim"],
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": v["image_size"], "patch_size": v["patch_size"], "layers": v["num_hidden_layers"],
            "width": v["hidden_size"], "head_width": v["hidden_size"] // v["num_attention_heads"],
            "mlp_ratio": v["intermediate_size"] / v["hidden_size"],
        },
        "text_cfg": {
            "context_length": t["max_position_embeddings"], "vocab_size": t["vocab_size"], "width": t["hidden_size"],
            "heads": t["num_attention_heads"], "layers": t["num_hidden_layers"],
            "mlp_ratio": t["intermediate_size"] / t["hidden_size"],
            # HF CLIP pools the text at the first end-of-text token; so does open_clip's "eos" pooling.
            "pool_type": "eos", "eos_id": t["eos_token_id"], "pad_id": t["pad_token_id"],
            "hf_tokenizer_name": tokenizer_dir,
        },
    }


# ---------------------------------------------------------------------------- one timed process


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_timed(cmd: list[str], env: dict[str, str], log: Path) -> dict:
    """Run ``cmd``; wall seconds, the main process's peak RSS and the peak RSS of its process tree."""
    peak_tree = 0
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=benchlib.REPO)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak_tree
            while not done.wait(0.1):
                peak_tree = max(peak_tree, _tree_rss(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}); last lines of {log}:\n"
                           + "\n".join(log.read_text().splitlines()[-25:]))
    # CPU time of the process and of the children it reaped (open_clip's data workers).
    return {"wall_s": round(wall, 3), "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "peak_tree_rss_mib": round(peak_tree / 2**20, 1)}


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               TQDM_DISABLE="1", PYTHONPATH=str(benchlib.REPO))
    env.pop("ACCELERATE_DYNAMO_BACKEND", None)
    return env


def openclip_cmd(args, mode: str, epochs: int, workers: int, logs: Path) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child-openclip", mode, "--child-epochs", str(epochs),
            "--child-workers", str(workers), "--child-logs", str(logs), "--threads", str(args.threads),
            "--child-config-dir", str(args.config_dir), "--child-csv", str(args.csv)]


def ours_cmd(args, strategy: str, epochs: int, out: Path) -> list[str]:
    return [sys.executable, str(benchlib.REPO / "recipes" / "medical.py"),
            "--dataset", str(args.csv), "--image-column", "filepath", "--caption-column", "title", "--label-column", "label",
            "--group-columns", "skin_tone", "sex", "--validation-split", "", "--test-split", "", "--audit", "",
            "--strategy", strategy, "--epochs", str(epochs), "--per-device-batch-size", "64",
            "--learning-rate", str(LR), "--weight-decay", str(WD), "--adam-beta2", str(BETA2), "--warmup-steps", "0",
            "--max-grad-norm", str(CLIP_NORM), "--mixed-precision", "no", "--checkpoint-steps", "0", "--eval-steps", "0",
            "--select-best", "false", "--logging-steps", str(args.steps_per_epoch), "--cpu", "--cpu-threads", str(args.threads),
            "--output-dir", str(out)]


def child_openclip(args) -> int:
    """Inside the fresh process: all cores, the demo config registered, then open_clip's own ``main``."""
    import torch

    torch.set_num_threads(args.threads)
    import open_clip
    from open_clip_train.main import main as open_clip_main

    open_clip.add_model_config(args.child_config_dir)
    argv = [
        "--train-data", args.child_csv, "--dataset-type", "csv", "--csv-separator", ",",
        "--csv-img-key", "filepath", "--csv-caption-key", "title", "--model", "demo-clip",
        "--batch-size", "64", "--epochs", str(args.child_epochs), "--workers", str(args.child_workers),
        "--lr", str(LR), "--wd", str(WD), "--beta1", "0.9", "--beta2", str(BETA2), "--eps", str(EPS), "--warmup", "0",
        "--grad-clip-norm", str(CLIP_NORM), "--precision", "fp32", "--device", "cpu", "--seed", "0",
        "--save-frequency", "0", "--zeroshot-frequency", "0", "--val-frequency", "0", "--report-to", "",
        "--log-every-n-steps", "1000", "--logs", args.child_logs, "--name", "run",
    ]
    if args.child_openclip == "lock-image":
        argv.append("--lock-image")
    open_clip_main(argv)
    return 0


def parameter_counts(config_dir: Path) -> dict:
    """Parameters of the open_clip model built from the registered config and of the demo CLIP."""
    import open_clip

    from workbench.models import load_clip

    open_clip.add_model_config(str(config_dir))
    peer = open_clip.create_model("demo-clip", device="cpu")
    ours, _ = load_clip("workbench/demo-clip")
    return {"open_clip": sum(p.numel() for p in peer.parameters()), "ours": sum(p.numel() for p in ours.parameters())}


# ---------------------------------------------------------------------------- measurement

# open_clip logs the first batch of every epoch and its last; the last line's "Batch (t)" is the
# mean step time (data wait included) of the steps in between.
_OPEN_CLIP_EPOCH_END = re.compile(r"Train Epoch: (\d+) \[\s*\d+/\d+ \(100%\)\].*?Batch \(t\): ([\d.]+)")


def logged_rate_open_clip(log_text: str, batch: int) -> float | None:
    """Samples/s of epochs 2+ from open_clip's own log (steps 2..n of each epoch: its first step is left out)."""
    times = [float(m.group(2)) for m in _OPEN_CLIP_EPOCH_END.finditer(log_text) if int(m.group(1)) >= 1]
    return round(batch / statistics.mean(times), 1) if times else None


def logged_rate_ours(train_log_text: str, steps_per_epoch: int) -> float | None:
    """Samples/s of epochs 2+ from the workbench's ``train_log.jsonl`` written once per epoch.

    Each record's ``samples_per_s`` covers the steps since the previous record (one epoch),
    so epochs 2+ together run at the harmonic mean of their records' rates.
    """
    rates = [r["samples_per_s"] for r in map(json.loads, train_log_text.splitlines()) if r["step"] > steps_per_epoch]
    return round(len(rates) / sum(1 / r for r in rates), 1) if rates else None



def steady(short: dict, long: dict, samples: int, extra_epochs: int) -> dict:
    """Samples per second of the epochs the long run has beyond the short one, on the wall clock and in CPU time."""
    seconds = long["wall_s"] - short["wall_s"]
    cpu = long["cpu_s"] - short["cpu_s"]
    return {"short_wall_s": short["wall_s"], "long_wall_s": long["wall_s"], "steady_s": round(seconds, 3),
            "samples_per_s": round(samples * extra_epochs / seconds, 1) if seconds > 0 else None,
            "short_cpu_s": short["cpu_s"], "long_cpu_s": long["cpu_s"], "steady_cpu_s": round(cpu, 3),
            "samples_per_cpu_s": round(samples * extra_epochs / cpu, 1) if cpu > 0 else None,
            "peak_rss_mib": long["peak_rss_mib"], "peak_tree_rss_mib": long["peak_tree_rss_mib"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=None, help="training images used (default 3000; quick 640)")
    parser.add_argument("--epochs", default=None, help="short,long epoch counts (default 1,3; quick 1,2)")
    parser.add_argument("--workers", default="0,1,2",
                        help="open_clip data workers: one value, or several to try first and keep the fastest")
    parser.add_argument("--strategies", default="full,frozen-image,lora", help="ours, comma-separated")
    parser.add_argument("--threads", type=int, default=0, help="threads on both sides (default 0: every available core)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats of each pair (default 2; quick 1)")
    parser.add_argument("--quick", action="store_true", help="640 images, epochs 1 and 2, one repeat: about 4 minutes")
    parser.add_argument("--output", default=None, help="also write the JSON to this file")
    for hidden in ("--child-openclip", "--child-epochs", "--child-workers", "--child-logs", "--child-config-dir", "--child-csv"):
        parser.add_argument(hidden, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads <= 0:
        args.threads = len(os.sched_getaffinity(0))
    if args.child_openclip:
        return child_openclip(args)

    benchlib.configure(args.threads)
    from workbench.models import resolve_model_path
    from workbench.paths import data_home

    samples = args.samples or (640 if args.quick else 3000)
    short, long = (int(x) for x in (args.epochs or ("1,2" if args.quick else "1,3")).split(","))
    repeats = args.repeats or (1 if args.quick else 2)
    if long <= short:
        parser.error("--epochs: the second count must be larger than the first")
    strategies = args.strategies.split(",")
    unknown = [s for s in strategies if s not in OURS]
    if unknown:
        parser.error(f"--strategies: unknown {unknown[0]!r}; choose from {', '.join(OURS)}")

    root = data_home() / "bench" / "openclip-peer"
    args.csv = write_peer_data(root / f"demo-train-{samples}", samples)
    demo_dir = resolve_model_path("workbench/demo-clip")
    args.config_dir = root / "model_configs"
    args.config_dir.mkdir(parents=True, exist_ok=True)
    hf_config = json.loads((Path(demo_dir) / "config.json").read_text())
    (args.config_dir / "demo-clip.json").write_text(json.dumps(open_clip_config(hf_config, str(demo_dir)), indent=2))
    counts = parameter_counts(args.config_dir)
    rows = sum(1 for _ in open(args.csv, encoding="utf-8")) - 1
    per_epoch = (rows // 64) * 64
    args.steps_per_epoch = rows // 64
    env = _env(args.threads)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    work = Path(tempfile.mkdtemp(prefix="openclip-peer-"))
    print(f"{rows} images, {per_epoch} samples per epoch, {args.threads} threads per side; parameters {counts}", file=sys.stderr)

    def openclip_pair(mode: str, workers: int, tag: str) -> dict:
        runs = {}
        for epochs in (short, long):
            logs = work / f"oc-{tag}-{mode}-w{workers}-e{epochs}"
            runs[epochs] = run_timed(openclip_cmd(args, mode, epochs, workers, logs), env, work / f"{logs.name}.log")
        row = steady(runs[short], runs[long], per_epoch, long - short)
        row["logged_samples_per_s"] = logged_rate_open_clip((logs / "run" / "out.log").read_text(), 64)
        return row

    def ours_pair(strategy: str, tag: str) -> dict:
        runs = {}
        for epochs in (short, long):
            out = work / f"ours-{tag}-{strategy}-e{epochs}"
            runs[epochs] = run_timed(ours_cmd(args, strategy, epochs, out), env, work / f"{out.name}.log")
        row = steady(runs[short], runs[long], per_epoch, long - short)
        row["logged_samples_per_s"] = logged_rate_ours((out / "train_log.jsonl").read_text(), args.steps_per_epoch)
        return row

    # 1. open_clip's data workers: one 2-epoch run each, epoch 2's rate from its own log; keep the fastest.
    worker_options = [int(w) for w in args.workers.split(",")]
    probe = {}
    if len(worker_options) > 1:
        for w in worker_options:
            logs = work / f"oc-probe-w{w}"
            run = run_timed(openclip_cmd(args, "full", 2, w, logs), env, work / f"{logs.name}.log")
            probe[w] = {**run, "logged_samples_per_s": logged_rate_open_clip((logs / "run" / "out.log").read_text(), 64)}
            print(f"open_clip full, {w} workers: {probe[w]['logged_samples_per_s']} samples/s (epoch 2)", file=sys.stderr)
        workers = max(probe, key=lambda w: probe[w]["logged_samples_per_s"] or 0)
    else:
        workers = worker_options[0]

    # 2. Alternating pairs: each of ours beside its open_clip counterpart, order flipped every repeat.
    peer_modes = sorted({PEER_OF[s] for s in strategies})
    results: dict[str, list[dict]] = {f"ours:{s}": [] for s in strategies} | {f"open_clip:{m}": [] for m in peer_modes}
    for r in range(repeats):
        jobs = [(f"open_clip:{m}", lambda m=m, r=r: openclip_pair(m, workers, f"r{r}")) for m in peer_modes]
        jobs += [(f"ours:{s}", lambda s=s, r=r: ours_pair(s, f"r{r}")) for s in strategies]
        order = jobs if r % 2 == 0 else list(reversed(jobs))
        for name, job in order:
            results[name].append(job())
            print(f"repeat {r + 1}: {name} {results[name][-1]['samples_per_s']} samples/s", file=sys.stderr)

    def summary(runs: list[dict]) -> dict:
        return {"samples_per_s": round(benchlib.median(x["samples_per_s"] for x in runs), 1),
                "samples_per_cpu_s": round(benchlib.median(x["samples_per_cpu_s"] for x in runs), 1),
                "logged_samples_per_s": round(benchlib.median(x["logged_samples_per_s"] for x in runs), 1),
                "peak_rss_mib": round(benchlib.median(x["peak_rss_mib"] for x in runs), 1),
                "peak_tree_rss_mib": round(benchlib.median(x["peak_tree_rss_mib"] for x in runs), 1),
                "runs": runs}

    sides = {name: summary(runs) for name, runs in results.items()}
    comparisons = {}
    for s in strategies:
        ours_rate = sides[f"ours:{s}"]["samples_per_s"]
        peer_rate = sides[f"open_clip:{PEER_OF[s]}"]["samples_per_s"]
        ratio = benchlib.ratio(ours_rate, peer_rate)
        ratio_cpu = benchlib.ratio(sides[f"ours:{s}"]["samples_per_cpu_s"], sides[f"open_clip:{PEER_OF[s]}"]["samples_per_cpu_s"])
        ratio_logged = benchlib.ratio(sides[f"ours:{s}"]["logged_samples_per_s"], sides[f"open_clip:{PEER_OF[s]}"]["logged_samples_per_s"])
        comparisons[s] = {"ours": f"ours:{s}", "open_clip": f"open_clip:{PEER_OF[s]}", "ratio": ratio, "ratio_cpu_time": ratio_cpu,
                          "ratio_logged_steps": ratio_logged,
                          "peak_rss_ratio": benchlib.ratio(sides[f"ours:{s}"]["peak_rss_mib"], sides[f"open_clip:{PEER_OF[s]}"]["peak_rss_mib"]),
                          "per_repeat_ratios": [benchlib.ratio(a["samples_per_s"], b["samples_per_s"]) for a, b in
                                                zip(results[f"ours:{s}"], results[f"open_clip:{PEER_OF[s]}"])],
                          "target": TARGETS[s], "target_met": ratio is not None and ratio >= TARGETS[s]}
    benchlib.emit({
        "benchmark": "openclip_peer",
        "machine": benchlib.machine(),
        "load_average_at_start": load_at_start,
        "config": {"images": rows, "samples_per_epoch": per_epoch, "epochs_short_long": [short, long], "batch": 64,
                   "precision": "fp32", "threads_each_side": args.threads, "open_clip_workers": workers,
                   "repeats": repeats, "parameters": counts, "quick": args.quick,
                   "open_clip_model_config": json.loads((args.config_dir / "demo-clip.json").read_text())},
        "versions": _versions(),
        "open_clip_worker_probe": {str(w): p for w, p in probe.items()},
        "sides": sides,
        "comparisons": comparisons,
    }, args.output)
    shutil.rmtree(work, ignore_errors=True)  # run folders and logs; kept when a run fails (its log is named)
    return 0


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "torchvision", "open_clip_torch", "transformers", "accelerate", "peft"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


if __name__ == "__main__":
    sys.exit(main())

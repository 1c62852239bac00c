"""Smoke tests of the benchmark scripts: each runs in its quickest mode and its JSON is checked.

No timing is asserted (speed lives in BENCHMARKS.md); what is asserted: the JSON is
well-formed, every ratio equals the quotient of the medians it is built from, both sides of
each comparison do the same work (equal loss, equal audit results), and the FLOP count of
``bench/gpu.py --tiny`` equals an analytic transformer count.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"


def run_script(name: str, *args: str, tmp_path: Path, timeout: int = 900, output: bool = True) -> dict:
    out = tmp_path / f"{name}.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(BENCH / name), *args, *(["--output", str(out)] if output else [])],
        capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    printed = json.loads(proc.stdout)  # stdout holds exactly one JSON document
    if output:
        assert printed == json.loads(out.read_text())
    return printed


def check_machine(result: dict) -> None:
    m = result["machine"]
    assert m["cpu_count"] >= 1 and m["date"] and m["torch"]


# ---------------------------------------------------------------------------- FLOPs


def _gpu_module():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def analytic_train_flops(cfg: dict, batch: int, text_len: int) -> tuple[int, int]:
    """(dense, attention) FLOPs of one training step of a CLIP: forward + backward (2x forward).

    Per layer and token: 8 d^2 (q, k, v, out projections) + 4 d ff (MLP), at 2 FLOPs per
    multiply-add. Attention: 4 L^2 d per layer and sequence (QK^T and AV). The patch
    embedding's backward needs only the weight gradient (pixels need none): 2x, not 3x.
    The loss adds two (B x D) @ (D x B) products.
    """
    v, t, proj = cfg["vision"], cfg["text"], cfg["projection_dim"]
    patches = (v["image_size"] // v["patch_size"]) ** 2
    v_len = patches + 1

    def layer_dense(d, ff):
        return 8 * d * d + 4 * d * ff

    fwd = batch * t["num_hidden_layers"] * text_len * layer_dense(t["hidden_size"], t["intermediate_size"])
    fwd += batch * v["num_hidden_layers"] * v_len * layer_dense(v["hidden_size"], v["intermediate_size"])
    fwd += batch * 2 * (v["hidden_size"] + t["hidden_size"]) * proj
    fwd += 2 * 2 * batch * batch * proj
    conv = batch * patches * 2 * 3 * v["patch_size"] ** 2 * v["hidden_size"]
    attn = batch * (t["num_hidden_layers"] * 4 * text_len**2 * t["hidden_size"] + v["num_hidden_layers"] * 4 * v_len**2 * v["hidden_size"])
    return 3 * fwd + 2 * conv, 3 * attn


@pytest.mark.slow
def test_gpu_tiny_flop_count_matches_analytic(tmp_path):
    result = run_script("gpu.py", "--tiny", tmp_path=tmp_path, output=False)
    (row,) = result["results"]
    cfg = _gpu_module().CONFIGS["tiny"]
    dense, attention = analytic_train_flops(cfg, row["batch"], text_len=77)
    measured = row["flops_per_step"]
    total = dense + attention
    assert abs(measured - total) / total < 0.15
    # FlopCounterMode counts every matmul and convolution exactly. It does not count the CPU
    # SDPA kernel (it does count the CUDA flash / efficient ones), so on a CPU the count is
    # exactly the dense part and on a GPU dense + attention.
    import torch

    if not torch.cuda.is_available():  # gpu.py runs on CUDA whenever it is there
        assert measured == dense
    else:
        assert abs(measured - total) / total < 0.01


def test_analytic_flops_by_hand():
    """The formula on a one-layer toy, written out by hand."""
    cfg = {"vision": dict(hidden_size=4, intermediate_size=8, num_hidden_layers=1, image_size=4, patch_size=2),
           "text": dict(hidden_size=4, intermediate_size=8, num_hidden_layers=1), "projection_dim": 2}
    dense, attention = analytic_train_flops(cfg, batch=2, text_len=3)
    # per token per layer: 8*16 + 4*4*8 = 256; text 2*3 tokens, vision 2*5 tokens -> 16*256 = 4096
    # projections 2*2*(4+4)*2 = 64; logits 2*2*2*2*2 = 32; forward 4192; conv 2*4*2*3*4*4 = 768
    assert dense == 3 * 4192 + 2 * 768
    # attention: 2 * (4*9*4 + 4*25*4) = 1088 forward
    assert attention == 3 * 1088


# ---------------------------------------------------------------------------- training


@pytest.mark.slow
def test_train_throughput_quick(tmp_path):
    r = run_script("train_throughput.py", "--quick", "--samples", "48", "--batch", "16", "--repeats", "1", tmp_path=tmp_path)
    check_machine(r)
    assert r["config"]["samples_per_epoch"] == 48 and r["config"]["epochs"] == 2
    # Both sides compute the same loss on the same batch; ours pads text to the batch's longest caption.
    check = r["same_loss_check"]
    assert check["abs_diff"] < 1e-5
    assert check["ours_text_width"] < check["baseline_text_width"]
    assert set(r["strategies"]) == {"full", "frozen-image", "lora"}
    for strategy, row in r["strategies"].items():
        for clock in ("wall", "cpu"):
            for side in ("baseline", "ours"):
                s = row[side][clock]
                assert len(s["epoch_seconds"]) == 1 and len(s["epoch_seconds"][0]) == 2
                assert s["epoch1_s"] == round(s["epoch_seconds"][0][0], 3)
                # seconds are rounded to 3 decimals and rates to 1: allow exactly that rounding
                t = s["epoch2plus_s"]
                assert abs(s["epoch2plus_samples_per_s"] - 48 / t) <= 48 * 0.0005 / (t * (t - 0.0005)) + 0.05
            b, o = row["baseline"][clock], row["ours"][clock]
            assert row[clock]["ratio_epoch2plus"] == round(o["epoch2plus_samples_per_s"] / b["epoch2plus_samples_per_s"], 3)
        assert row["target_met"] == (row["wall"]["ratio_epoch2plus"] >= row["target_epoch2plus"])
    frozen = r["strategies"]["frozen-image"]
    assert frozen["wall"]["cache_speedup_epoch2plus"] == round(
        frozen["ours"]["wall"]["epoch2plus_samples_per_s"] / frozen["ours_no_cache"]["wall"]["epoch2plus_samples_per_s"], 3
    )


@pytest.mark.slow
def test_memory_quick(tmp_path):
    r = run_script("memory.py", "--quick", "--batch", "16", "--steps", "1", "--impls", "ours", "--strategies", "lora",
                   tmp_path=tmp_path)
    check_machine(r)
    peaks = r["peaks"]["ours"]
    assert set(peaks) == {"full", "lora"} and set(r["checks"]) == {"ours:lora_below_full"}
    for cell in peaks.values():
        assert cell["peak_rss_mib"] > 0
        assert cell["train_overhead_mib"] == round(cell["peak_rss_mib"] - r["idle_peak_rss_mib"], 1)
    for name, below in r["checks"].items():
        strategy = name.split(":")[1].removesuffix("_below_full")
        assert below == (peaks[strategy]["train_overhead_mib"] < peaks["full"]["train_overhead_mib"])


# ---------------------------------------------------------------------------- audit and data


@pytest.mark.slow
def test_audit_speed_quick(tmp_path):
    r = run_script(
        "audit_speed.py", "--quick", "--images", "60", "--n-boot", "20", "--repeats", "1",
        "--scale-images", "60,120", "--scale-prompts", "100,200", tmp_path=tmp_path,
    )
    check_machine(r)
    head = r["headline"]
    assert head["images"] == 60
    assert head["target_speedup"] == head["prompts"] / 2
    naive_s, ours_s = head["naive_median_s"], head["ours_median_s"]  # both rounded to 3 decimals
    assert abs(head["speedup"] - naive_s / ours_s) <= naive_s / ours_s * (0.0005 / ours_s + 0.0005 / naive_s) + 0.001
    assert len(head["naive_cpu_s"]) == len(head["ours_cpu_s"]) == 1 and head["speedup_cpu_time"] > 0
    same = head["same_results"]
    # The naive loop and run_audit produce the same results table.
    assert same["rows_ours"] == same["rows_naive"] == same["rows_matched"] > 0
    assert same["max_abs_value_diff"] < 1e-4 and same["nan_pattern_equal"]
    assert [row["images"] for row in r["scaling"]["images"]] == [60, 120]
    # Every audit encodes a fixed set (neutral, control and harmful prompts); templates fill the rest.
    counts = [row["prompts"] for row in r["scaling"]["prompts"]]
    assert counts[0] < counts[1] and abs(counts[0] - 100) <= 10 and abs(counts[1] - 200) <= 10


@pytest.mark.slow
def test_data_pipeline_quick(tmp_path):
    r = run_script("data_pipeline.py", "--quick", "--images", "64", "--batches", "2", "--batch", "16", "--repeats", "1", tmp_path=tmp_path)
    check_machine(r)
    rates = r["images_per_s"]
    assert set(rates) == {"decode_once", "batch_delivery", "per_example", "model_step"}
    assert all(v > 0 for v in rates.values())
    assert r["delivery_over_model"] == round(rates["batch_delivery"] / rates["model_step"], 3)
    assert r["loader_is_bottleneck"] == (rates["batch_delivery"] < rates["model_step"])


@pytest.mark.slow  # several seconds; runs in CI (keeps the default pytest under 3 minutes)
def test_ranking_prefix_identical(tmp_path):
    r = run_script("ranking_prefix.py", "--quick", "--sizes", "300,900", "--n-boot", "50", "--repeats", "1", tmp_path=tmp_path)
    assert [row["images"] for row in r["rows"]] == [300, 900]
    for row in r["rows"]:
        assert row["identical"] and row["max_abs_diff"] == 0.0


# ---------------------------------------------------------------------------- peers: open_clip, the HF pipeline, real size


def _bench_module(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the scripts import benchlib as a sibling
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_open_clip_config_has_the_demo_clip_dimensions():
    peer = _bench_module("openclip_peer")
    demo = json.loads((REPO / ".data" / "demo-clip" / "config.json").read_text()) if (REPO / ".data" / "demo-clip").is_dir() else None
    hf = demo or {
        "projection_dim": 96,
        "vision_config": {"image_size": 64, "patch_size": 8, "num_hidden_layers": 3, "hidden_size": 96,
                          "num_attention_heads": 4, "intermediate_size": 384, "hidden_act": "quick_gelu"},
        "text_config": {"max_position_embeddings": 40, "vocab_size": 748, "hidden_size": 96, "num_attention_heads": 4,
                        "num_hidden_layers": 3, "intermediate_size": 384, "eos_token_id": 1, "pad_token_id": 1,
                        "hidden_act": "quick_gelu"},
    }
    cfg = peer.open_clip_config(hf, "/some/tokenizer")
    v, t = hf["vision_config"], hf["text_config"]
    assert cfg["embed_dim"] == hf["projection_dim"] and cfg["quick_gelu"] is True
    assert cfg["vision_cfg"] == {"image_size": v["image_size"], "patch_size": v["patch_size"], "layers": v["num_hidden_layers"],
                                 "width": v["hidden_size"], "head_width": v["hidden_size"] // v["num_attention_heads"],
                                 "mlp_ratio": 4.0}
    assert cfg["text_cfg"]["context_length"] == t["max_position_embeddings"] and cfg["text_cfg"]["vocab_size"] == t["vocab_size"]
    assert cfg["text_cfg"]["heads"] == t["num_attention_heads"] and cfg["text_cfg"]["layers"] == t["num_hidden_layers"]
    # HF CLIP pools at the end-of-text token; open_clip must too, with the tokenizer's ids.
    assert (cfg["text_cfg"]["pool_type"], cfg["text_cfg"]["eos_id"]) == ("eos", t["eos_token_id"])
    assert cfg["text_cfg"]["hf_tokenizer_name"] == "/some/tokenizer"
    with pytest.raises(ValueError, match="gelu"):
        peer.open_clip_config({**hf, "vision_config": {**v, "hidden_act": "gelu"}}, "x")


def test_open_clip_steady_state_is_the_difference_of_two_runs():
    peer = _bench_module("openclip_peer")
    short = {"wall_s": 10.0, "cpu_s": 15.0, "peak_rss_mib": 900.0, "peak_tree_rss_mib": 950.0}
    long = {"wall_s": 26.0, "cpu_s": 47.0, "peak_rss_mib": 910.0, "peak_tree_rss_mib": 990.0}
    row = peer.steady(short, long, samples=2944, extra_epochs=2)
    # 2 extra epochs of 2944 samples in 16 s of wall time and 32 s of CPU time
    assert row["steady_s"] == 16.0 and row["samples_per_s"] == 368.0
    assert row["steady_cpu_s"] == 32.0 and row["samples_per_cpu_s"] == 184.0
    assert (row["peak_rss_mib"], row["peak_tree_rss_mib"]) == (910.0, 990.0)  # the long run's peaks
    assert peer.steady(long, short, samples=2944, extra_epochs=2)["samples_per_s"] is None  # noise, not a rate


def test_pipeline_calls_cover_every_audit_prompt_once():
    from workbench.audit.core import prompts_needed
    from workbench.audit.spec import load_audit_spec

    avp = _bench_module("audit_vs_pipeline")
    spec = load_audit_spec(REPO / "audits" / "derm_demo.yaml")
    labels = list(spec.classes.labels)
    prompts = prompts_needed(spec, labels)
    calls = avp.prompt_calls(spec, labels, prompts)
    # One call per class template: the 4 classes and the 4 harmful labels in that template.
    assert len(calls) == len(spec.classes.templates) + 1
    for template, call in zip(spec.classes.templates, calls):
        assert call == [template.replace("{}", w) for w in labels + list(spec.harmful.labels)]
    flat = [p for call in calls for p in call]
    assert sorted(flat) == sorted(prompts) and len(flat) == len(set(flat))


@pytest.mark.slow
@pytest.mark.parametrize(("loop", "images"), [("batched", 60), ("per-image", 20)])
def test_audit_vs_pipeline_quick_gives_the_same_predictions(tmp_path, loop, images):
    r = run_script("audit_vs_pipeline.py", "--quick", "--images", str(images), "--loop", loop, tmp_path=tmp_path)
    check_machine(r)
    assert r["config"]["pipeline_loop"] == loop
    same = r["same_predictions"]
    assert same["all_same"] and same["same_top_label"] == same["predictions"] == images * r["config"]["pipeline_calls"]
    assert same["max_abs_score_diff"] < 1e-4
    assert r["speedup"] == round(r["pipeline_median_s"] / r["run_audit_median_s"], 3) or abs(
        r["speedup"] - r["pipeline_median_s"] / r["run_audit_median_s"]) < 0.01
    assert r["target_met"] == (r["speedup"] >= r["target"])


def test_checkpointed_layer_inputs_by_hand():
    from types import SimpleNamespace

    real = _bench_module("real_size")
    config = SimpleNamespace(
        vision_config=SimpleNamespace(image_size=224, patch_size=32, num_hidden_layers=12, hidden_size=768),
        text_config=SimpleNamespace(num_hidden_layers=12, hidden_size=512),
    )
    # ViT-B/32: 7 x 7 patches + class token = 50 tokens; batch 2, 10 text tokens, fp32
    expected = 4 * 2 * (12 * 50 * 768 + 12 * 10 * 512)
    assert real.checkpoint_inputs_bytes(SimpleNamespace(config=config), 2, 10) == expected == 4_177_920


def test_steady_rates_read_from_each_sides_log():
    peer = _bench_module("openclip_peer")
    open_clip_log = "\n".join([
        "2026-12-05,11:45:05 | INFO | Train Epoch: 0 [ 64/320 (20%)] Data (t): 0.5 Batch (t): 9.000, 7.1/s",
        "2026-12-05,11:45:15 | INFO | Train Epoch: 0 [320/320 (100%)] Data (t): 0.494 Batch (t): 11.652, 12.7/s",
        "2026-12-05,11:45:17 | INFO | Train Epoch: 1 [ 64/320 (20%)] Data (t): 0.194 Batch (t): 2.047, 31.2/s",
        "2026-12-05,11:45:39 | INFO | Train Epoch: 1 [320/320 (100%)] Data (t): 0.135 Batch (t): 0.400, 160/s",
        "2026-12-05,11:45:59 | INFO | Train Epoch: 2 [320/320 (100%)] Data (t): 0.135 Batch (t): 0.240, 266/s",
    ])
    # epochs 2 and 3 (0-based 1 and 2): mean step 0.32 s -> 64 / 0.32 = 200 samples/s; epoch 1 is left out
    assert peer.logged_rate_open_clip(open_clip_log, 64) == 200.0
    ours_log = "\n".join(json.dumps({"step": s, "samples_per_s": r}) for s, r in [(5, 50.0), (10, 100.0), (15, 300.0)])
    # epochs 2 and 3 at 100 and 300 samples/s, equal sample counts: harmonic mean 2 / (1/100 + 1/300) = 150
    assert peer.logged_rate_ours(ours_log, steps_per_epoch=5) == 150.0

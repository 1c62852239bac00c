"""The training loop: run folder contents, checkpoints, resume after a kill, NaN and OOM
handling, the frozen image tower's embedding cache, mixed precision, best checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_fixtures import REPO, derm_dir, grads_of, max_diff, random_batch, recipe_args, tiny_model, tiny_model_dir  # noqa: F401

from workbench import schema
from workbench.train import RUN_HEALTH_FILE, FinetuneConfig, LossNotFinite, OutOfMemory, finetune, last_checkpoint
from workbench.train import loop as L


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Each in-process run builds its own Accelerator; its state is a process-wide singleton."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _config(model_dir, data_dir, out, **kw) -> FinetuneConfig:
    base = dict(
        model=str(model_dir), dataset=str(data_dir), output_dir=str(out), group_columns=["skin_tone", "sex"],
        templates=["a photo of {}.", "dermoscopy image of {}"], per_device_batch_size=16, eval_batch_size=64,
        learning_rate=1e-3, warmup_steps=2, logging_steps=1, eval_steps=3, checkpoint_steps=3, epochs=2,
    )
    base.update(kw)
    return FinetuneConfig(**base)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / schema.RUN_MODEL_DIR / "model.safetensors"))


def test_run_folder_follows_the_schema(tiny_model_dir, derm_dir, tmp_path):
    cache = tmp_path / "pixels"
    run = finetune(
        _config(tiny_model_dir, derm_dir, tmp_path / "run", wise_alpha=[0.0, 0.5, 1.0], pixel_cache_dir=str(cache)),
        recipe="test",
    )
    assert len(list(cache.glob("pixels-*.npy"))) == 3  # train, validation, test decoded once
    config = json.loads((run / schema.RUN_CONFIG_FILE).read_text())
    assert config["config"]["strategy"] == "full" and config["trust_remote_code"] is False
    assert config["steps_per_epoch"] == 96 // 16 and config["total_steps"] == 12
    assert config["cpu_threads"] == torch.get_num_threads()
    assert config["config"]["dataset"] == str(derm_dir) and config["config"]["data_config"] is None
    assert json.loads((run / schema.RUN_BASE_FILE).read_text())["model"] == str(tiny_model_dir)
    log = [json.loads(line) for line in (run / schema.RUN_TRAIN_LOG).read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 13))
    assert set(schema.TRAIN_LOG_FIELDS) <= set(log[0])
    assert all(1.0 <= r["logit_scale"] <= 100.0 for r in log)
    evals = [r for r in log if r["val_accuracy"] is not None]
    assert [r["step"] for r in evals] == [3, 6, 9, 12]
    zs = json.loads((run / schema.RUN_ZEROSHOT_FILE).read_text())
    assert set(zs["base"]) == set(zs["tuned"]) == {"validation", "test"}
    best = max(evals, key=lambda r: (r["val_accuracy"], -r["step"]))
    assert zs["selected_step"] == best["step"]
    assert zs["tuned"]["validation"] == pytest.approx(best["val_accuracy"])
    # WiSE end points reproduce the base and tuned accuracies.
    assert [w["alpha"] for w in zs["wise"]] == [0.0, 0.5, 1.0]
    assert zs["wise"][0]["test"] == pytest.approx(zs["base"]["test"])
    assert zs["wise"][-1]["test"] == pytest.approx(zs["tuned"]["test"])
    from workbench.data import ColumnMap, load_splits, pixels_for
    from workbench.embed import group_accuracy_gaps, zero_shot_hits
    from workbench.models import load_clip

    model, processor = load_clip(str(run))  # a run folder loads as a model
    assert type(model).__name__ == "CLIPModel"
    # The WiSE end point alpha=1 reports the tuned model's own group gaps, recomputed here by hand.
    test = load_splits(str(derm_dir), ColumnMap(groups=("skin_tone", "sex")), splits=["test"])["test"]
    px = pixels_for(test, processor.image_processor, progress=False)
    hits = zero_shot_hits(model, processor, test, config["class_names"], config["config"]["templates"], pixels=px)
    for col in ("skin_tone", "sex"):
        rates = [float(hits[[v == g for v in test[col]]].float().mean()) for g in sorted(set(test[col]))]
        assert zs["wise"][-1]["gap"][col] == pytest.approx(max(rates) - min(rates), abs=1e-6)
    assert zs["wise"][-1]["gap"] == pytest.approx(group_accuracy_gaps(hits, px.valid, test, ["skin_tone", "sex"]))
    assert zs["wise"][-1]["gap_split"] == "test"
    # The run judged itself: the numbers it judged are the ones it reported.
    health = json.loads((run / RUN_HEALTH_FILE).read_text())
    assert health["checks"]["accuracy"] == {"base": zs["base"], "tuned": zs["tuned"]}
    assert health["checks"]["logged_losses"] == 12 and health["checks"]["final_logit_scale"] == log[-1]["logit_scale"]
    below = [s for s in zs["base"] if zs["tuned"][s] < zs["base"][s]]
    assert sum("lowered zero-shot accuracy" in w for w in health["warnings"]) == len(below)
    # Checkpoints every 3 steps, the 2 newest kept; the best step's snapshot is gone once model/ holds it.
    assert [s for s, _ in L.complete_checkpoints(run)] == [9, 12]
    assert L.best_snapshots(run) == []


def test_half_written_checkpoint_is_never_last(tmp_path):
    root = tmp_path / schema.RUN_CHECKPOINTS_DIR
    (root / "step_0000004").mkdir(parents=True)
    (root / "step_0000004" / L.TRAINER_STATE_FILE).write_text("{}")
    (root / ".step_0000008.tmp").mkdir()  # killed during save_state
    (root / "step_0000006").mkdir()  # no trainer state: incomplete
    assert last_checkpoint(tmp_path) == root / "step_0000004"


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_resume_after_kill_reaches_the_same_weights(tiny_model_dir, derm_dir, tmp_path, strategy):
    args = ["recipes/medical.py", "--max-steps", "60", "--checkpoint-steps", "5", "--eval-steps", "0", "--select-best", "false",
            "--strategy", strategy]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def cmd(out, *extra):
        return [sys.executable, *args[:1], *recipe_args(tiny_model_dir, derm_dir, out), *args[1:], *extra]

    whole = subprocess.run(cmd(tmp_path / "whole"), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(cmd(killed_dir), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and last_checkpoint(killed_dir) is None and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    at_kill = last_checkpoint(killed_dir)
    assert at_kill is not None and L.read_trainer_state(at_kill)["step"] < 60
    assert not (killed_dir / schema.RUN_MODEL_DIR).exists()

    resumed = subprocess.run(cmd(killed_dir, "--resume"), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    a, b = _weights(tmp_path / "whole"), _weights(killed_dir)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    steps = [json.loads(line)["step"] for line in (killed_dir / schema.RUN_TRAIN_LOG).read_text().splitlines()]
    assert steps == list(range(1, 61))  # lines the killed run wrote after its checkpoint were dropped
    if strategy == "lora":  # the checkpoints it resumed through hold the adapters only
        kept = L.complete_checkpoints(killed_dir)
        assert kept and all(all("lora_" in k for k in load_file(str(path / L.WEIGHTS_FILE))) for _, path in kept)


def _dir_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_checkpoints_only_when_asked_and_no_final_checkpoint(tiny_model_dir, derm_dir, tmp_path):
    # Not asked: no checkpoint at all, not even at the last step; the best step is selected from its snapshot.
    never = finetune(_config(tiny_model_dir, derm_dir, tmp_path / "never", checkpoint_steps=0, eval_steps=1), recipe="test")
    assert not any(p.is_dir() for p in (never / schema.RUN_CHECKPOINTS_DIR).glob("*"))
    zs = json.loads((never / schema.RUN_ZEROSHOT_FILE).read_text())
    log = [json.loads(line) for line in (never / schema.RUN_TRAIN_LOG).read_text().splitlines()]
    best = max(log, key=lambda r: (r["val_accuracy"], -r["step"]))
    assert zs["selected_step"] == best["step"] and zs["tuned"]["validation"] == pytest.approx(best["val_accuracy"])
    assert zs["selected_step"] < zs["final_step"]  # so the weights came from the best step's snapshot
    # Asked every 5 of 12 steps: steps 5 and 10 only (12 is not a multiple of 5).
    every5 = finetune(_config(tiny_model_dir, derm_dir, tmp_path / "every5", checkpoint_steps=5, eval_steps=0,
                              select_best=False), recipe="test")
    assert [s for s, _ in L.complete_checkpoints(every5)] == [5, 10]
    assert L.best_snapshots(every5) == []


def test_lora_checkpoint_holds_the_adapter_and_its_optimizer_state(tiny_model_dir, derm_dir, tmp_path):
    common = dict(max_steps=2, checkpoint_steps=2, eval_steps=0, select_best=False, validation_split="", test_split="")
    full = finetune(_config(tiny_model_dir, derm_dir, tmp_path / "full", **common), recipe="test")
    lora = finetune(_config(tiny_model_dir, derm_dir, tmp_path / "lora", strategy="lora", lora_r=4,
                            lora_targets=["q_proj", "v_proj"], **common), recipe="test")
    (_, full_ckpt), = L.complete_checkpoints(full)
    (_, lora_ckpt), = L.complete_checkpoints(lora)
    full_weights = load_file(str(full_ckpt / L.WEIGHTS_FILE))
    lora_weights = load_file(str(lora_ckpt / L.WEIGHTS_FILE))
    # Full: every parameter of the model. LoRA: exactly the adapters, 2 towers x 2 layers x 2 modules x (A, B).
    assert set(full_weights) == {"clip." + k for k in load_file(str(tiny_model_dir / "model.safetensors"))}
    assert len(lora_weights) == 16 and all(".lora_A." in k or ".lora_B." in k for k in lora_weights)
    assert sum(t.numel() for t in lora_weights.values()) == 8 * 4 * (32 + 32)  # r (in + out) per module
    # Its optimizer state covers the same tensors (two AdamW moments each).
    moments = torch.load(lora_ckpt / "optimizer.bin", weights_only=True)["state"]
    assert len(moments) == 16 and all(set(m) >= {"exp_avg", "exp_avg_sq"} for m in moments.values())
    assert _dir_bytes(lora_ckpt) < 0.10 * _dir_bytes(full_ckpt)


def test_resume_from_a_lora_checkpoint_with_best_step_selection(tiny_model_dir, derm_dir, tmp_path, monkeypatch):
    settings = dict(strategy="lora", max_steps=6, checkpoint_steps=2, eval_steps=1, keep_checkpoints=10, learning_rate=5e-3)
    whole = finetune(_config(tiny_model_dir, derm_dir, tmp_path / "whole", **settings), recipe="test")

    class Stop(Exception):
        pass

    real_save = L.save_checkpoint

    def save_then_stop_at_4(accelerator, run_dir, step, state):
        done = real_save(accelerator, run_dir, step, state)
        if step == 4:
            raise Stop
        return done

    monkeypatch.setattr(L, "save_checkpoint", save_then_stop_at_4)
    with pytest.raises(Stop):
        finetune(_config(tiny_model_dir, derm_dir, tmp_path / "cut", **settings), recipe="test")
    monkeypatch.setattr(L, "save_checkpoint", real_save)
    assert [s for s, _ in L.complete_checkpoints(tmp_path / "cut")] == [2, 4]
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    resumed = finetune(_config(tiny_model_dir, derm_dir, tmp_path / "cut", resume=True, **settings), recipe="test")
    a, b = _weights(whole), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    adapter = schema.RUN_ADAPTER_DIR
    a, b = load_file(str(whole / adapter / "adapter_model.safetensors")), load_file(str(resumed / adapter / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    zs_whole, zs_resumed = (json.loads((r / schema.RUN_ZEROSHOT_FILE).read_text()) for r in (whole, resumed))
    # The best step (2) came before the cut: its snapshot survived because checkpoint 4 still named it.
    assert zs_resumed["selected_step"] == zs_whole["selected_step"] < zs_whole["final_step"]
    assert zs_resumed["tuned"] == zs_whole["tuned"]


def test_resume_onto_other_frozen_weights_is_refused(tiny_model_dir, derm_dir, tmp_path):
    from transformers import CLIPModel, CLIPProcessor

    settings = dict(strategy="lora", max_steps=2, checkpoint_steps=2, eval_steps=0, select_best=False)
    finetune(_config(tiny_model_dir, derm_dir, tmp_path / "run", **settings), recipe="test")
    other = CLIPModel.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        other.vision_model.post_layernorm.weight.add_(0.5)  # a frozen weight under LoRA
    other.save_pretrained(tmp_path / "other")
    CLIPProcessor.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "other")
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    with pytest.raises(ValueError, match="frozen weights of --model .* differ"):
        finetune(_config(tmp_path / "other", derm_dir, tmp_path / "run", resume=True, max_steps=4,
                         **{k: v for k, v in settings.items() if k != "max_steps"}), recipe="test")


def test_resume_without_checkpoint_and_reuse_of_a_run_folder_are_refused(tiny_model_dir, derm_dir, tmp_path):
    with pytest.raises(ValueError, match="no complete checkpoint"):
        finetune(_config(tiny_model_dir, derm_dir, tmp_path / "empty", resume=True), recipe="test")
    done = tmp_path / "used" / schema.RUN_CHECKPOINTS_DIR / "step_0000003"
    done.mkdir(parents=True)
    (done / L.TRAINER_STATE_FILE).write_text('{"step": 3}')
    with pytest.raises(ValueError, match="already holds checkpoints; pass --resume"):
        finetune(_config(tiny_model_dir, derm_dir, tmp_path / "used"), recipe="test")


def test_frozen_image_tower_is_bit_identical_and_embedded_once(tiny_model_dir, derm_dir, tmp_path, monkeypatch):
    from transformers.models.clip import modeling_clip

    calls = {"n": 0}
    original = modeling_clip.CLIPVisionModel.forward

    def counting(self, *a, **kw):
        calls["n"] += 1
        return original(self, *a, **kw)

    monkeypatch.setattr(modeling_clip.CLIPVisionModel, "forward", counting)
    counts = {}
    for epochs in (1, 2):
        calls["n"] = 0
        run = finetune(
            _config(tiny_model_dir, derm_dir, tmp_path / f"e{epochs}", strategy="frozen-image", epochs=epochs,
                    eval_steps=2, checkpoint_steps=0),
            recipe="test",
        )
        counts[epochs] = calls["n"]
    # More epochs and more validation passes, not one more vision-tower call.
    assert counts[1] == counts[2] > 0
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    tuned = _weights(tmp_path / "e2")
    image_side = [k for k in base if k.startswith(("vision_model.", "visual_projection."))]
    assert image_side and all(torch.equal(base[k], tuned[k]) for k in image_side)
    assert not torch.equal(base["text_projection.weight"], tuned["text_projection.weight"])
    # Control: the full strategy runs the vision tower every step.
    calls["n"] = 0
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    finetune(_config(tiny_model_dir, derm_dir, tmp_path / "full", max_steps=2, eval_steps=0, checkpoint_steps=0,
                     validation_split="", test_split=""), recipe="test")
    assert calls["n"] == 2  # one vision forward per training step


def test_lora_run_writes_adapter_and_merged_model(tiny_model_dir, derm_dir, tmp_path):
    run = finetune(
        _config(tiny_model_dir, derm_dir, tmp_path / "lora", strategy="lora", lora_targets=["q_proj", "v_proj", "text:fc1"],
                epochs=1, select_best=False),
        recipe="test",
    )
    adapter_cfg = json.loads((run / schema.RUN_ADAPTER_DIR / "adapter_config.json").read_text())
    assert adapter_cfg.get("task_type") is None
    assert any(t.endswith("mlp.fc1") for t in adapter_cfg["target_modules"])
    merged = _weights(run)
    assert not any("lora" in k for k in merged)
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    assert not torch.equal(base["text_model.encoder.layers.0.self_attn.q_proj.weight"], merged["text_model.encoder.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(base["text_model.encoder.layers.0.self_attn.k_proj.weight"], merged["text_model.encoder.layers.0.self_attn.k_proj.weight"])
    # The adapter on the base model gives the merged model's outputs.
    from peft import PeftModel
    from transformers import CLIPModel

    from workbench.models import load_clip

    with_adapter = PeftModel.from_pretrained(CLIPModel.from_pretrained(tiny_model_dir), str(run / schema.RUN_ADAPTER_DIR)).eval()
    merged_model, _ = load_clip(str(run))
    batch = random_batch(4, seed=0)
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8]] * 4) , "attention_mask": torch.ones(4, 4, dtype=torch.long),
             "pixel_values": batch["pixel_values"]}
    with torch.no_grad():
        a, b = with_adapter(**batch), merged_model(**batch)
    assert torch.allclose(a.text_embeds, b.text_embeds, atol=1e-5)
    assert torch.allclose(a.image_embeds, b.image_embeds, atol=1e-5)


def test_bad_lora_target_fails_before_any_data_is_read(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="valid names: .*q_proj"):
        finetune(_config(tiny_model_dir, tmp_path / "no-such-data", tmp_path / "x", strategy="lora", lora_targets=["query"]), recipe="test")


def test_nan_loss_stops_with_the_step_and_keeps_the_checkpoint(tiny_model_dir, derm_dir, tmp_path):
    # A learning rate of 1e30 blows the weights up after the first update.
    with pytest.raises(LossNotFinite, match=r"at step 2 .*step_0000001"):
        finetune(
            _config(tiny_model_dir, derm_dir, tmp_path / "nan", learning_rate=1e30, warmup_steps=0, checkpoint_steps=1,
                    max_grad_norm=None, eval_steps=0),
            recipe="test",
        )
    assert last_checkpoint(tmp_path / "nan").name == "step_0000001"


def test_out_of_memory_names_the_remedies(tiny_model_dir, derm_dir, tmp_path, monkeypatch):
    def oom(*a, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(L, "contrastive_step", oom)
    with pytest.raises(OutOfMemory, match=r"step 1 .*--per-device-batch-size 16.*--accumulation-steps.*--gradient-checkpointing"):
        finetune(_config(tiny_model_dir, derm_dir, tmp_path / "oom"), recipe="test")


def test_bf16_with_gradient_checkpointing_and_tensorboard(tiny_model_dir, derm_dir, tmp_path):
    run = finetune(
        _config(tiny_model_dir, derm_dir, tmp_path / "bf16", mixed_precision="bf16", gradient_checkpointing=True,
                accumulation_steps=2, per_device_batch_size=8, max_steps=3, report_to="tensorboard", eval_steps=0,
                validation_split="", test_split=""),
        recipe="test",
    )
    log = [json.loads(line) for line in (run / schema.RUN_TRAIN_LOG).read_text().splitlines()]
    assert len(log) == 3 and all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    assert list(run.rglob("events.out.tfevents.*")), "no tensorboard event file"


def test_gradient_checkpointing_gives_the_same_gradients():
    from workbench.train import ContrastiveEncoder, contrastive_step

    batch = random_batch(8, seed=0)
    plain, ckpt = tiny_model(seed=1), tiny_model(seed=1)
    ckpt.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    for m in (plain, ckpt):
        m.train()
        contrastive_step(ContrastiveEncoder(m), [batch])
    assert max_diff(grads_of(plain), grads_of(ckpt)) < 1e-6


def _saved_activation_bytes(encoder, batch) -> int:
    """Bytes autograd keeps for backward after one forward of the loss (each storage once, weights excluded)."""
    from workbench.train import contrastive_loss

    weights = {p.untyped_storage().data_ptr() for p in encoder.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in weights:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        contrastive_loss(*encoder(**batch))
    return sum(seen.values())


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_gradient_checkpointing_is_on_in_both_towers(strategy):
    """What --gradient-checkpointing does (run._enable_gradient_checkpointing, then the strategy) cuts what
    autograd keeps to the layer inputs: at this size (2 layers of width 32, 17-token images, 10-token
    captions) to under a third of the plain forward's."""
    from workbench.train import ContrastiveEncoder, apply_strategy
    from workbench.train.run import _enable_gradient_checkpointing

    batch = random_batch(8, seed=0)
    kept = {}
    for on in (False, True):
        model = tiny_model(seed=1)
        if on:
            _enable_gradient_checkpointing(model)
        encoder = ContrastiveEncoder(apply_strategy(model, strategy))
        encoder.train()
        kept[on] = _saved_activation_bytes(encoder, batch)
    assert kept[True] < kept[False] / 3, kept


def test_fine_tuning_uses_fused_adamw_on_the_cpu_with_the_same_steps():
    from workbench.train.run import build_adamw

    torch.manual_seed(0)
    start = [torch.randn(7, 5), torch.randn(5)]
    grads = [[torch.randn_like(t) for t in start] for _ in range(3)]
    results = {}
    for fused in (True, False):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        groups = [{"params": params[:1], "weight_decay": 0.1}, {"params": params[1:], "weight_decay": 0.0}]
        opt = build_adamw(groups, 1e-2, 0.98, torch.device("cpu")) if fused else torch.optim.AdamW(
            groups, lr=1e-2, betas=(0.9, 0.98), eps=1e-6)
        assert opt.defaults["fused"] is (True if fused else None)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            opt.step()
        results[fused] = [p.detach() for p in params]
    # Same update rule as the per-tensor loop, to float rounding.
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(results[True], results[False]))


def test_data_order_is_a_function_of_seed_and_epoch():
    a, b = L.epoch_order(50, 3, 1), L.epoch_order(50, 3, 1)
    assert torch.equal(a, b) and not torch.equal(a, L.epoch_order(50, 3, 2))
    # Ranks take consecutive slices; together they are the global batch.
    rows = [L.local_rows(a, 1, 4, r, 2) for r in range(2)]
    assert torch.equal(torch.cat(rows), a[8:16])

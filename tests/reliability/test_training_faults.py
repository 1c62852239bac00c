"""Faults during fine-tuning: kill -9 while a checkpoint is written, NaN/inf, full or unwritable disks, hostile checkpoints."""

from __future__ import annotations

import errno
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from conftest import assert_same_weights, final_weights, run_child, tiny_finetune_config

from workbench import io
from workbench.models import ModelLoadError, refuse_unsafe_pickles
from workbench.train import loop as L
from workbench.train.run import finetune


@pytest.fixture(scope="module")
def reference_run(model_dir, derm_dir, tmp_path_factory) -> Path:
    """An uninterrupted 6-step run with complete checkpoints at steps 2, 4 and 6."""
    return finetune(tiny_finetune_config(model_dir, derm_dir, tmp_path_factory.mktemp("ref") / "run"), recipe="reliability")


class _Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _poison(folder: Path, marker: Path) -> None:
    torch.save({"payload": _Payload(marker)}, folder / "custom_checkpoint_0.pkl")


@pytest.mark.slow
def test_kill_during_checkpoint_save_then_resume_matches_uninterrupted(model_dir, derm_dir, reference_run, tmp_path):
    out = tmp_path / "run"
    config = tiny_finetune_config(model_dir, derm_dir, out)
    # The child writes step 4's state files, then dies before trainer_state.json and the rename.
    result = run_child(f"""
        import os, signal
        from accelerate import Accelerator
        from workbench.train.config import FinetuneConfig
        from workbench.train.run import finetune
        original = Accelerator.save_state
        def save_state(self, output_dir=None, **kw):
            done = original(self, output_dir, **kw)
            if str(output_dir).endswith(".step_0000004.tmp"):
                os.kill(os.getpid(), signal.SIGKILL)
            return done
        Accelerator.save_state = save_state
        finetune(FinetuneConfig(**{config.__dict__!r}), recipe="reliability")
    """)
    assert result.returncode == -9, result.stderr[-3000:]
    ckpts = out / "checkpoints"
    assert (ckpts / ".step_0000004.tmp" / "model.safetensors").is_file()  # the half-written one is there
    # A step folder without its trainer state (e.g. copied by hand, interrupted) is never "last" either.
    shutil.copytree(ckpts / ".step_0000004.tmp", ckpts / "step_0000005")
    assert L.last_checkpoint(out) == ckpts / "step_0000002"

    finetune(tiny_finetune_config(model_dir, derm_dir, out, resume=True), recipe="reliability")
    assert_same_weights(final_weights(out), final_weights(reference_run))
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_run_config_records_the_trust_flag(reference_run):
    config = json.loads((reference_run / "config.json").read_text())
    assert config["trust_remote_code"] is False and config["config"]["trust_remote_code"] is False


def test_checkpoint_pickles_are_checked_and_a_payload_never_runs(reference_run, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(L.last_checkpoint(reference_run), ckpt)
    checked = {p.name for p in refuse_unsafe_pickles(ckpt)}
    assert {"optimizer.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl"} <= checked
    marker = tmp_path / "PWNED"
    for write in (lambda p: _poison(ckpt, marker), lambda p: (ckpt / "random_states_0.pkl").write_bytes(pickle.dumps(_Payload(marker)))):
        write(ckpt)
        with pytest.raises(ModelLoadError, match="refusing to unpickle"):
            refuse_unsafe_pickles(ckpt)
        assert not marker.exists()


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_with_a_pickle_payload(model_dir, derm_dir, reference_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    marker = tmp_path / "PWNED"
    _poison(L.last_checkpoint(run), marker)
    try:
        with pytest.raises(ModelLoadError):
            finetune(tiny_finetune_config(model_dir, derm_dir, run, resume=True, max_steps=8), recipe="reliability")
    finally:
        assert not marker.exists(), "the pickle payload ran during resume"


@pytest.mark.slow
def test_nan_loss_stops_with_the_step_and_the_last_good_checkpoint_resumes(model_dir, derm_dir, reference_run, tmp_path, monkeypatch):
    real_step = L.contrastive_step
    calls = {"n": 0}

    def nan_at_step_5(*args, **kwargs):
        calls["n"] += 1
        loss = real_step(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(L, "contrastive_step", nan_at_step_5)
    out = tmp_path / "run"
    with pytest.raises(L.LossNotFinite, match=r"at step 5 .*step_0000004"):
        finetune(tiny_finetune_config(model_dir, derm_dir, out), recipe="reliability")
    assert L.last_checkpoint(out).name == "step_0000004"
    assert L.read_trainer_state(L.last_checkpoint(out))["step"] == 4
    monkeypatch.setattr(L, "contrastive_step", real_step)
    finetune(tiny_finetune_config(model_dir, derm_dir, out, resume=True), recipe="reliability")
    assert_same_weights(final_weights(out), final_weights(reference_run))


@pytest.mark.slow
def test_exploding_gradient_stops_before_the_update_and_no_checkpoint_holds_nan(model_dir, derm_dir, tmp_path, monkeypatch):
    from accelerate import Accelerator
    from safetensors.torch import load_file

    real_backward = Accelerator.backward
    calls = {"n": 0}

    def backward_inf_at_step_4(self, loss, **kwargs):
        real_backward(self, loss, **kwargs)
        calls["n"] += 1
        if calls["n"] == 4:
            param = next(p for p in self._models[0].parameters() if p.requires_grad and p.grad is not None)
            param.grad.view(-1)[0] = float("inf")

    monkeypatch.setattr(Accelerator, "backward", backward_inf_at_step_4)
    out = tmp_path / "run"
    try:
        with pytest.raises(L.LossNotFinite, match="at step 4"):
            finetune(tiny_finetune_config(model_dir, derm_dir, out), recipe="reliability")
    finally:
        for step, folder in L.complete_checkpoints(out):
            weights = load_file(str(folder / "model.safetensors"))
            assert all(torch.isfinite(t).all() for t in weights.values()), f"checkpoint {step} holds NaN/inf weights"


def test_free_space_check_names_the_need_and_the_folder(tmp_path, monkeypatch):
    io.check_free_space(tmp_path / "new" / "run", 1, what="the run")  # a folder that does not exist yet is fine
    assert not (tmp_path / "new").exists()
    monkeypatch.setattr(io.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 2048, 2048))
    with pytest.raises(OSError, match=r"the run needs about 1\.0 GB but the disk holding .* has 2\.0 KB free") as err:
        io.check_free_space(tmp_path / "run", 2**30, what="the run")
    assert err.value.errno == errno.ENOSPC
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        io.check_free_space(blocker / "run", 1, what="the run")


def test_fine_tune_checks_free_space_before_training(model_dir, derm_dir, tmp_path, monkeypatch):
    from workbench import io
    monkeypatch.setattr(io.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(OSError, match="free"):
        finetune(tiny_finetune_config(model_dir, derm_dir, tmp_path / "run"), recipe="reliability")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unwritable_output_folder_fails_before_training(model_dir, derm_dir, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the run folder's parent should be")
    # Caught by the flag checks, before anything loads: one line naming the file in the way.
    with pytest.raises(ValueError) as err:
        finetune(tiny_finetune_config(model_dir, derm_dir, blocker / "run"), recipe="reliability")
    assert str(err.value).endswith(f"{blocker} is a file; name a folder")
    assert blocker.read_text().startswith("a file")


def test_disk_full_at_a_checkpoint_says_what_was_kept(model_dir, derm_dir, tmp_path, monkeypatch):
    from accelerate import Accelerator

    real = Accelerator.save_state

    def full_at_step_4(self, output_dir=None, **kw):
        if str(output_dir).endswith(".step_0000004.tmp"):
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, output_dir, **kw)

    monkeypatch.setattr(Accelerator, "save_state", full_at_step_4)
    out = tmp_path / "run"
    with pytest.raises(OSError, match=r"step 4.*kept: .*step_0000002"):
        finetune(tiny_finetune_config(model_dir, derm_dir, out), recipe="reliability")
    assert L.last_checkpoint(out).name == "step_0000002"
    assert not (out / "checkpoints" / ".step_0000004.tmp").exists()

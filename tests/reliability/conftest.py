"""Fixtures for the fault and bad-input suite: a tiny saved model, a tiny data set, child processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from workbench.demo.derm import generate_derm
from workbench.models import make_tiny_clip, save_clip
from workbench.train.config import FinetuneConfig

REPO = Path(__file__).resolve().parents[2]

# A small audit over both demo attributes, fast enough for fault tests.
TINY_AUDIT = """
name: tiny
attributes:
  - column: skin_tone
  - column: sex
min_group_size: 3
classes:
  templates: ["a photo of {}"]
skew:
  prompts: ["a suspicious lesion", "a harmless lesion"]
  k: [5]
bootstrap:
  n_boot: 20
  seed: 0
  n_perm: 50
"""


@pytest.fixture(autouse=True, scope="module")
def one_cpu_thread():
    """Fault tests compare weights bit for bit across processes and resumes: one intra-op thread.

    With several threads some CPU kernels (the embedding backward among them) may add partial sums
    in an order that depends on scheduling, so two identical runs can differ in the last bit on a
    busy machine. Child processes inherit the count through OMP_NUM_THREADS (see run_child).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def model_dir(tiny_tokenizer, tmp_path_factory) -> Path:
    """A save_pretrained folder (safetensors) holding a tiny random CLIP with 32 px images."""
    model, processor = make_tiny_clip(tiny_tokenizer, image_size=32)
    return save_clip(model, processor, tmp_path_factory.mktemp("rel-model") / "model")


@pytest.fixture(scope="session")
def derm_dir(tmp_path_factory) -> Path:
    """A small demo dermatology data set on disk (train 48, validation 16, test 16)."""
    folder = tmp_path_factory.mktemp("rel-derm") / "ds"
    generate_derm({"train": 48, "validation": 16, "test": 16}, seed=5).save_to_disk(str(folder))
    return folder


def tiny_finetune_config(model: Path, data: Path, out: Path, **overrides):
    """Fast settings: 8-pair batches, a checkpoint every 2 steps, all checkpoints kept."""
    settings = dict(
        model=str(model), dataset=str(data), output_dir=str(out), per_device_batch_size=8, max_steps=6,
        checkpoint_steps=2, eval_steps=0, logging_steps=1, warmup_steps=1, learning_rate=1e-3,
        eval_batch_size=64, keep_checkpoints=10, cpu=True, select_best=False,
    )
    settings.update(overrides)
    return FinetuneConfig(**settings)


def run_child(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python (same offline environment) and return the finished process."""
    # Same thread count as this process: CPU reductions then sum in the same order, so weights match bit for bit.
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def final_weights(run: Path) -> dict:
    return load_file(str(run / "model" / "model.safetensors"))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k

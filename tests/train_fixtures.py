"""Tiny models, batches and data folders for the fine-tuning tests (imported by tests/test_train_*.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
VOCAB = 100
EOS = VOCAB - 1


def tiny_config(vocab_size: int = VOCAB, eos: int = EOS, max_positions: int = 16, dropout: float = 0.0):
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=max_positions, eos_token_id=eos,
            bos_token_id=eos - 1, pad_token_id=eos, attention_dropout=dropout, dropout=dropout,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=32, patch_size=8, attention_dropout=dropout, dropout=dropout,
        ),
        projection_dim=16,
    )


def tiny_model(seed: int = 0, **kw):
    from transformers import CLIPModel

    torch.manual_seed(seed)
    return CLIPModel(tiny_config(**kw))


def random_batch(n: int, seed: int, seq: int = 10) -> dict[str, torch.Tensor]:
    """Pairs with full-length captions ending in EOS (so padding plays no part)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB - 2, (n, seq), generator=g)
    ids[:, -1] = EOS
    return {
        "input_ids": ids,
        "attention_mask": torch.ones(n, seq, dtype=torch.long),
        "pixel_values": torch.randn(n, 3, 32, 32, generator=g),
    }


def grads_of(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_tokenizer, tmp_path_factory) -> Path:
    """A save_pretrained folder: tiny CLIPModel + real tokenizer + 32 px image processor."""
    from transformers import CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    tok = tiny_tokenizer
    torch.manual_seed(0)
    model = CLIPModel(tiny_config(vocab_size=len(tok), eos=tok.eos_token_id, max_positions=40))
    model.config.text_config.bos_token_id = tok.bos_token_id
    model.config.text_config.pad_token_id = tok.pad_token_id
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    folder = tmp_path_factory.mktemp("tiny-clip")
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def derm_dir(tmp_path_factory) -> Path:
    """A small demo-like dermatology data set on disk (save_to_disk folder)."""
    from workbench.demo.derm import generate_derm

    folder = tmp_path_factory.mktemp("derm") / "ds"
    generate_derm({"train": 96, "validation": 32, "test": 32}, seed=5).save_to_disk(str(folder))
    return folder


def recipe_args(model_dir: Path, data_dir: Path, out: Path, *extra: str) -> list[str]:
    """Arguments for recipes/medical.py on the tiny model and data, fast settings."""
    return [
        "--model", str(model_dir), "--dataset", str(data_dir), "--output-dir", str(out),
        "--per-device-batch-size", "16", "--eval-batch-size", "64", "--warmup-steps", "2",
        "--logging-steps", "1", "--audit", "", *extra,
    ]


def run_python(args: list[str], timeout: float = 300, *, omp_num_threads: str | None = "1", **popen) -> subprocess.CompletedProcess:
    """This interpreter on ``args`` from the repository root; ``omp_num_threads=None`` leaves the thread count unset."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(REPO)
    if omp_num_threads is not None:
        env["OMP_NUM_THREADS"] = omp_num_threads
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, **popen)

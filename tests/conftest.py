"""Test set-up: offline, no writes to ~/.cache/huggingface, small shared fixtures."""

from __future__ import annotations

import os
import tempfile

# Before any Hugging Face import: tests never touch the network or the user's cache.
_HF_HOME = tempfile.mkdtemp(prefix="workbench-hf-home-")
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402

from workbench.demo.base import train_clip_tokenizer  # noqa: E402  (after the environment above)
from workbench.demo.derm import generate_derm, generate_derm_rows  # noqa: E402
from workbench.demo.shapes import generate_shapes_rows  # noqa: E402
from workbench.models import make_tiny_clip  # noqa: E402


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    """A real CLIPTokenizer trained on both demo corpora (small sample)."""
    texts = generate_shapes_rows(400, seed=1)["caption"] + generate_derm_rows(300, seed=2)["caption"]
    return train_clip_tokenizer(texts, 600, tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture
def tiny_clip(tiny_tokenizer):
    """A randomly initialised tiny CLIPModel + processor (32 px images)."""
    return make_tiny_clip(tiny_tokenizer, image_size=32)


@pytest.fixture(scope="session")
def small_derm():
    """A small demo dermatology DatasetDict in canonical shape (64 px images)."""
    return generate_derm({"train": 64, "validation": 24, "test": 32}, seed=3)

"""The embedded demo: determinism, planted-bias knobs, vocabulary separation, tokenizer, base build."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from workbench.demo.base import BaseBuildConfig, build_demo_model
from workbench.demo.derm import (
    CAPTION_TEMPLATES,
    CLASS_PHRASES,
    CLASSES,
    DermBias,
    generate_derm_rows,
    render_lesion_image,
)
from workbench.demo.shapes import generate_shapes_rows


def test_derm_generator_is_deterministic():
    a = generate_derm_rows(20, seed=5)
    b = generate_derm_rows(20, seed=5)
    c = generate_derm_rows(20, seed=6)
    assert all(np.array_equal(x, y) for x, y in zip(a["image"], b["image"]))
    assert a["caption"] == b["caption"] and a["label"] == b["label"] and a["skin_tone"] == b["skin_tone"]
    assert not all(np.array_equal(x, y) for x, y in zip(a["image"], c["image"]))


def test_derm_rows_have_every_class_and_group():
    rows = generate_derm_rows(400, seed=1)
    assert set(rows["label"]) == set(CLASSES)
    assert set(rows["skin_tone"]) == {"light", "medium", "dark"}
    assert set(rows["sex"]) == {"female", "male"}
    assert rows["image"][0].shape == (64, 64, 3) and rows["image"][0].dtype == np.uint8


def test_planted_prevalence_has_its_size():
    bias = DermBias(prevalence={"dark": {"melanoma": 0.7, "nevus": 0.1, "basal cell carcinoma": 0.1, "seborrheic keratosis": 0.1}})
    rows = generate_derm_rows(3000, seed=2, bias=bias)
    labels = np.array(rows["label"])
    tone = np.array(rows["skin_tone"])
    dark_mel = np.mean(labels[tone == "dark"] == "melanoma")
    light_mel = np.mean(labels[tone == "light"] == "melanoma")
    # Binomial sd with n ~ 1000 is ~0.015; 4 sd bands.
    assert abs(dark_mel - 0.7) < 0.06
    assert abs(light_mel - 0.25) < 0.06


def test_planted_contrast_scales_the_lesion_exactly():
    # Same random stream, only the contrast differs: the lesion's departure from the skin
    # scales linearly with contrast (up to uint8 rounding).
    imgs = {c: render_lesion_image(np.random.default_rng(0), "melanoma", 3, "female", c).astype(int) for c in (0.0, 0.5, 1.0)}
    full = imgs[1.0] - imgs[0.0]
    half = imgs[0.5] - imgs[0.0]
    assert np.abs(full).max() > 100
    assert np.abs(half - full / 2).max() <= 1.0


def test_planted_caption_wording_hits_only_its_group():
    bias = DermBias(caption_terms={"dark": "aggressive"}, caption_term_rate=1.0)
    rows = generate_derm_rows(300, seed=4, bias=bias)
    for cap, tone in zip(rows["caption"], rows["skin_tone"]):
        assert cap.endswith(", aggressive") == (tone == "dark")


def test_bias_knobs_reject_unknown_names():
    with pytest.raises(ValueError, match="unknown skin tone"):
        generate_derm_rows(2, seed=0, bias=DermBias(prevalence={"purple": {"nevus": 1.0}}))
    with pytest.raises(ValueError, match="contrast"):
        generate_derm_rows(2, seed=0, bias=DermBias(contrast={"dark": 1.5}))


def test_generic_corpus_shares_no_lesion_vocabulary():
    lesion_text = " ".join(list(CAPTION_TEMPLATES) + [p for ps in CLASS_PHRASES.values() for p in ps])
    generic_words = set(re.findall(r"[a-z]+", " ".join(generate_shapes_rows(3000, seed=0)["caption"])))
    lesion_words = set(re.findall(r"[a-z]+", lesion_text.replace("{}", "")))
    # Function words are shared on purpose; no domain word may be.
    shared = lesion_words & generic_words
    assert shared <= {"a", "of", "on", "the", "an", "with", "in", "as"}, shared


def test_tokenizer_has_all_bytes_and_matching_special_ids(tiny_tokenizer, tiny_clip):
    model, _ = tiny_clip
    assert model.config.text_config.eos_token_id == tiny_tokenizer.eos_token_id
    assert model.config.text_config.vocab_size == len(tiny_tokenizer)
    ids = tiny_tokenizer("naïve ☃ text")["input_ids"]
    # Unknown characters must not map to end-of-text (pooling would read them).
    assert ids.count(tiny_tokenizer.eos_token_id) == 1 and ids[-1] == tiny_tokenizer.eos_token_id


def test_text_pooling_reads_end_of_text_not_padding(tiny_clip):
    model, processor = tiny_clip
    tok = processor.tokenizer
    short = tok(["a red circle"], return_tensors="pt")
    padded = tok(["a red circle", "a large blue square with a ragged edge on a white background"], padding=True, return_tensors="pt")
    with torch.no_grad():
        a = model.get_text_features(**short).pooler_output[0]
        b = model.get_text_features(**padded).pooler_output[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_demo_base_build_is_bit_for_bit_reproducible(tmp_path):
    cfg = BaseBuildConfig(corpus_size=200, steps=3, batch_size=16, warmup_steps=1, vocab_size=500)
    a = json.loads((build_demo_model(tmp_path / "a", cfg, progress=False) / "build.json").read_text())
    b = json.loads((build_demo_model(tmp_path / "b", cfg, progress=False) / "build.json").read_text())
    assert a["model_sha256"] == b["model_sha256"]
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()

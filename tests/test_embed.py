"""Encoding, prompt ensembles, zero-shot prediction and the embedding cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from workbench.data import pixels_for
from workbench.embed import (
    EmbeddingCache,
    class_embeddings,
    encode_images,
    encode_texts,
    label_indices,
    prompt_set_embeddings,
    zero_shot_accuracy,
    zero_shot_hits,
    zero_shot_predict,
)


def test_class_embeddings_are_normalised_means_of_normalised_prompts(tiny_clip):
    model, processor = tiny_clip
    classes, templates = ["melanoma", "nevus"], ["a photo of {}.", "{}", "close-up of {}"]
    got = class_embeddings(model, processor.tokenizer, classes, templates)
    by_hand = []
    for c in classes:
        tok = processor.tokenizer([t.format(c) for t in templates], padding=True, return_tensors="pt")
        with torch.no_grad():
            e = F.normalize(model.get_text_features(**tok).pooler_output, dim=-1)
        by_hand.append(F.normalize(e.mean(0), dim=-1))
    torch.testing.assert_close(got, torch.stack(by_hand), atol=1e-6, rtol=0)
    ragged = prompt_set_embeddings(model, processor.tokenizer, [["melanoma"], ["nevus", "a photo of nevus."]])
    assert ragged.shape == (2, model.config.projection_dim)
    torch.testing.assert_close(ragged.norm(dim=-1), torch.ones(2))


def test_image_encoding_does_not_depend_on_batch_size(tiny_clip, small_derm):
    model, processor = tiny_clip
    pix = pixels_for(small_derm["test"], processor.image_processor, progress=False)
    a = encode_images(model, pix.pixels, processor.image_processor, batch_size=5)
    b = encode_images(model, pix.pixels, processor.image_processor, batch_size=64)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_zero_shot_matches_the_models_own_logits(tiny_clip, small_derm):
    model, processor = tiny_clip
    test = small_derm["test"]
    classes = ["melanoma", "nevus", "basal cell carcinoma", "seborrheic keratosis"]
    pix = pixels_for(test, processor.image_processor, progress=False)
    img = encode_images(model, pix.pixels, processor.image_processor)
    cls = class_embeddings(model, processor.tokenizer, classes, ["{}"])
    ours = zero_shot_predict(img, cls)
    inputs = processor(text=classes, images=list(test["image"]), return_tensors="pt", padding=True)
    with torch.no_grad():
        ref = model(**inputs).logits_per_image.argmax(dim=1)
    assert torch.equal(ours, ref)
    acc = zero_shot_accuracy(model, processor, test, classes, ["{}"], pixels=pix)
    truth = torch.tensor([classes.index(c) for c in test["label"]])
    assert acc == float((ref == truth).float().mean())


def test_embedding_cache_computes_once(tmp_path):
    cache = EmbeddingCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return torch.arange(6, dtype=torch.float32).view(2, 3)

    a = cache.get_or_compute("m1", "d1", compute)
    b = cache.get_or_compute("m1", "d1", compute)
    assert torch.equal(a, b) and len(calls) == 1
    cache.get_or_compute("m2", "d1", compute)
    assert len(calls) == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_encode_texts_truncates_long_prompts(tiny_clip):
    model, processor = tiny_clip
    out = encode_texts(model, processor.tokenizer, ["red " * 3000, "a red circle"])
    assert out.shape == (2, model.config.projection_dim)


def test_zero_shot_from_cached_image_features_equals_running_the_vision_tower(tiny_clip, small_derm):
    """A frozen image tower embeds its images once; the accuracy from those features is the same number."""
    model, processor = tiny_clip
    test = small_derm["test"]
    classes = ["melanoma", "nevus", "basal cell carcinoma", "seborrheic keratosis"]
    pix = pixels_for(test, processor.image_processor, progress=False)
    features = encode_images(model, pix.pixels, processor.image_processor)
    direct = zero_shot_hits(model, processor, test, classes, ["a photo of {}.", "{}"], pixels=pix)
    cached = zero_shot_hits(model, processor, test, classes, ["a photo of {}.", "{}"], pixels=pix, image_features=features)
    assert torch.equal(direct, cached)
    acc = zero_shot_accuracy(model, processor, test, classes, ["a photo of {}.", "{}"], pixels=pix, image_features=features)
    assert acc == float(direct.float().mean())
    # Truth is each label's index among the class names, once for every caller.
    assert label_indices(test, classes).tolist() == [classes.index(c) for c in test["label"]]


def test_a_label_outside_the_class_names_is_named():
    from datasets import Dataset

    rows = Dataset.from_dict({"label": ["nevus", "wart", "nevus"]})
    with pytest.raises(ValueError, match="labels not among the class names: wart"):
        label_indices(rows, ["nevus", "melanoma"])


def test_class_embeddings_fill_templates_with_plain_replacement(tiny_clip):
    """Braces other than '{}' are text, not format fields (workbench.prompts.fill_template)."""
    model, processor = tiny_clip
    got = class_embeddings(model, processor.tokenizer, ["nevus"], ["{} (ISIC {year})"])
    by_hand = prompt_set_embeddings(model, processor.tokenizer, [["nevus (ISIC {year})"]])
    assert torch.equal(got, by_hand)

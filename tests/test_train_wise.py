"""WiSE-FT weight interpolation, and its LoRA form (scaling the merged delta)."""

from __future__ import annotations

import copy

import pytest
import torch
from train_fixtures import random_batch, tiny_model

from workbench.train import apply_strategy, interpolate_state_dicts, wise_model


def _tuned_pair():
    base = tiny_model(seed=0)
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return base, tuned


def test_end_points_are_bit_identical():
    base, tuned = _tuned_pair()
    for alpha, ref in ((0.0, base), (1.0, tuned)):
        mixed = wise_model(base, tuned, alpha).state_dict()
        for k, v in ref.state_dict().items():
            assert torch.equal(mixed[k], v), (alpha, k)


def test_midpoint_by_hand():
    base = {"w": torch.tensor([0.0, 2.0]), "ids": torch.tensor([1, 2])}
    tuned = {"w": torch.tensor([4.0, 6.0]), "ids": torch.tensor([1, 2])}
    out = interpolate_state_dicts(base, tuned, 0.25)
    assert torch.equal(out["w"], torch.tensor([1.0, 3.0]))
    assert torch.equal(out["ids"], tuned["ids"])


def test_bad_alpha_and_mismatched_models_are_refused():
    base, tuned = _tuned_pair()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        wise_model(base, tuned, 1.5)
    with pytest.raises(ValueError, match="keys differ"):
        interpolate_state_dicts({"a": torch.zeros(1)}, {"b": torch.zeros(1)}, 0.5)


def test_lora_wise_equals_scaling_the_adapter():
    """Interpolating base and merged weights at alpha == the adapter with its scale times alpha."""
    base = tiny_model(seed=0)
    peft_model = apply_strategy(copy.deepcopy(base), "lora", lora_r=4, lora_alpha=8)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)  # a trained-looking adapter (B starts at zero)
    batch = random_batch(5, seed=3)
    alpha = 0.4
    scaled = copy.deepcopy(peft_model)
    for module in scaled.modules():
        if hasattr(module, "scaling") and isinstance(module.scaling, dict):
            module.scaling = {k: v * alpha for k, v in module.scaling.items()}
    merged = copy.deepcopy(peft_model).merge_and_unload()
    mixed = wise_model(base, merged, alpha)
    with torch.no_grad():
        a, b = scaled.eval()(**batch), mixed.eval()(**batch)
        full = merged.eval()(**batch)
    assert torch.allclose(a.text_embeds, b.text_embeds, atol=1e-5)
    assert torch.allclose(a.image_embeds, b.image_embeds, atol=1e-5)
    assert not torch.allclose(full.text_embeds, b.text_embeds, atol=1e-3)

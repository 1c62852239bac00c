"""Strategies, parameter groups, temperature clamp, LoRA targets and merging."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from train_fixtures import random_batch, tiny_model

from workbench.train import (
    ContrastiveEncoder,
    apply_strategy,
    clamp_logit_scale,
    contrastive_step,
    param_groups,
    resolve_lora_targets,
    split_by_decay,
)
from workbench.train.strategies import STRATEGIES, StrategySettings, get_strategy, validate_strategy
from workbench.train.strategies import __file__ as STRATEGIES_FILE


def test_no_decay_names_on_a_real_clip_model():
    model = tiny_model()
    decay, exempt = split_by_decay(model.named_parameters())
    # Every norm spelling CLIP uses, biases, embeddings and the temperature are exempt.
    for name in [
        "logit_scale",
        "text_model.embeddings.token_embedding.weight",
        "text_model.embeddings.position_embedding.weight",
        "vision_model.embeddings.patch_embedding.weight",  # a 4-D conv weight, still an embedding
        "vision_model.embeddings.class_embedding",
        "vision_model.pre_layrnorm.weight",
        "vision_model.post_layernorm.weight",
        "text_model.final_layer_norm.weight",
        "text_model.encoder.layers.0.layer_norm1.weight",
        "vision_model.encoder.layers.1.layer_norm2.bias",
        "text_model.encoder.layers.0.self_attn.q_proj.bias",
    ]:
        assert name in exempt, name
    # Decayed: exactly the linear weight matrices and the two projections.
    expected = {
        n for n, p in model.named_parameters()
        if n.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "out_proj.weight", "fc1.weight", "fc2.weight"))
    } | {"text_projection.weight", "visual_projection.weight"}
    assert set(decay) == expected
    assert len(decay) + len(exempt) == len(list(model.parameters()))


def test_param_groups_carry_the_decay_and_skip_frozen():
    model = apply_strategy(tiny_model(), "frozen-image")
    groups = param_groups(ContrastiveEncoder(model), weight_decay=0.2)
    assert [g["weight_decay"] for g in groups] == [0.2, 0.0]
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert id(model.logit_scale) in in_groups
    assert id(model.visual_projection.weight) not in in_groups
    assert id(model.text_projection.weight) in in_groups


def test_temperature_is_clamped_to_100_after_a_step():
    model = tiny_model()
    with torch.no_grad():
        model.logit_scale.fill_(6.0)  # scale e^6 = 403
    clamp_logit_scale(model)
    assert float(model.logit_scale.detach()) == pytest.approx(math.log(100.0))
    with torch.no_grad():
        model.logit_scale.fill_(-1.0)
    clamp_logit_scale(ContrastiveEncoder(model))  # found by name through a wrapper
    assert float(model.logit_scale.detach()) == 0.0


def test_temperature_gets_no_weight_decay_in_a_real_step():
    """With zero gradient on the temperature, AdamW must leave it unchanged (no decay)."""
    model = tiny_model()
    enc = ContrastiveEncoder(model)
    opt = torch.optim.AdamW(param_groups(enc, weight_decay=0.5), lr=0.1)
    before = float(model.logit_scale.detach())
    contrastive_step(enc, [random_batch(8, seed=0)])
    model.logit_scale.grad.zero_()
    opt.step()
    assert float(model.logit_scale.detach()) == before


def test_frozen_image_keeps_the_image_side_fixed():
    model = apply_strategy(tiny_model(), "frozen-image")
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(n.startswith(("vision_model.", "visual_projection.")) for n in frozen)
    assert {n for n in frozen} == {n for n, _ in model.named_parameters() if n.startswith(("vision_model.", "visual_projection."))}
    assert "logit_scale" in trainable and "text_projection.weight" in trainable


def test_partial_unfreezing_last_block():
    model = apply_strategy(tiny_model(), "full", unfreeze_last_blocks=1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "text_model.encoder.layers.1.mlp.fc1.weight" in trainable
    assert "vision_model.encoder.layers.1.self_attn.q_proj.weight" in trainable
    assert "text_model.encoder.layers.0.mlp.fc1.weight" not in trainable
    assert "text_model.embeddings.token_embedding.weight" not in trainable
    assert {"logit_scale", "text_model.final_layer_norm.weight", "vision_model.post_layernorm.weight",
            "text_projection.weight", "visual_projection.weight"} <= trainable
    with pytest.raises(ValueError, match="only 2 blocks"):
        apply_strategy(tiny_model(), "full", unfreeze_last_blocks=3)


def test_invalid_strategy_names_choices():
    with pytest.raises(ValueError, match="full, frozen-image, lora"):
        validate_strategy("lit")
    with pytest.raises(ValueError, match="not lora"):
        validate_strategy("lora", StrategySettings(unfreeze_last_blocks=2))
    with pytest.raises(ValueError, match="--lora-r must be at least 1, got 0"):
        validate_strategy("lora", StrategySettings(lora_r=0))
    with pytest.raises(ValueError, match="unfreeze_last_blocks must be >= 0"):
        validate_strategy("frozen-image", StrategySettings(unfreeze_last_blocks=-1))
    # LoRA settings mean nothing to the other strategies: not an error there.
    assert validate_strategy("full", StrategySettings(lora_r=0)) is STRATEGIES["full"]


def test_registry_says_what_each_strategy_does():
    """Each strategy declares its behaviour; the run and the loop only ask these questions."""
    answers = {
        name: (s.caches_image_features, s.vision_tower_in_eval, s.max_pretrained_learning_rate is not None)
        for name, s in STRATEGIES.items()
    }
    assert answers == {"full": (False, False, True), "frozen-image": (True, True, True), "lora": (False, False, False)}
    assert get_strategy("lora") is STRATEGIES["lora"]
    # Training mode: the frozen image tower stays in eval (dropout and norms fixed), the text tower trains.
    for name in ("full", "frozen-image"):
        model = get_strategy(name).prepare(tiny_model(), StrategySettings())
        model.eval()
        get_strategy(name).set_train_mode(model, model)
        assert model.text_model.training and model.vision_model.training == (name == "full")
        assert all(m.training == (name == "full") for m in model.vision_model.modules())


def test_trained_model_is_a_plain_clip_with_the_trained_weights(tmp_path):
    """full: the encoder state loads into a fresh CLIPModel unchanged; lora: adapter written, then merged."""
    trained = tiny_model(seed=3)
    state = ContrastiveEncoder(trained).state_dict()
    plain = get_strategy("full").trained_model(trained.config, state, StrategySettings(), tmp_path / "full")
    assert type(plain).__name__ == "CLIPModel" and not plain.training
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in trained.state_dict().items())
    assert not (tmp_path / "full").exists()  # nothing written for a strategy without an adapter

    settings = StrategySettings(lora_r=4, lora_alpha=8, lora_targets=("q_proj",))
    lora = get_strategy("lora").prepare(tiny_model(seed=4), settings)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.fill_(0.01)  # a non-zero adapter, so merging changes the weights
    merged = get_strategy("lora").trained_model(trained.config, ContrastiveEncoder(lora).state_dict(), settings, tmp_path / "run")
    assert type(merged).__name__ == "CLIPModel" and not any("lora" in k for k in merged.state_dict())
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    batch = random_batch(4, seed=2)
    lora.eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).text_embeds, lora(**batch).text_embeds, atol=1e-5, rtol=0)


def test_no_strategy_name_is_compared_outside_the_registry():
    """What a strategy means lives in strategies.py; the rest of workbench/train asks the strategy object."""
    from pathlib import Path

    train = Path(STRATEGIES_FILE).parent
    offenders = [
        f"{path.name}:{n}: {line.strip()}"
        for path in sorted(train.glob("*.py")) if path.name != "strategies.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if any(f'"{name}"' in line or f"'{name}'" in line for name in STRATEGIES)
    ]
    assert offenders == []


def test_lora_targets_resolve_per_tower_and_refuse_unknown_names():
    model = tiny_model()
    both = resolve_lora_targets(model, ["q_proj"])
    assert len(both) == 4 and {n.split(".")[0] for n in both} == {"text_model", "vision_model"}
    text_fc1 = resolve_lora_targets(model, ["text:fc1"])
    assert text_fc1 == ["text_model.encoder.layers.0.mlp.fc1", "text_model.encoder.layers.1.mlp.fc1"]
    with pytest.raises(ValueError, match=r"'qkv'.*valid names: fc1, fc2, k_proj, out_proj, q_proj, text_projection, v_proj"):
        resolve_lora_targets(model, ["qkv"])
    with pytest.raises(ValueError, match="tower must be one of"):
        resolve_lora_targets(model, ["audio:q_proj"])


def test_lora_trains_only_adapters_and_merged_model_matches():
    base = tiny_model()
    peft_model = apply_strategy(copy.deepcopy(base), "lora", lora_r=4, lora_alpha=8)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # Train a few steps so the adapter is not zero, then compare adapter vs merged outputs.
    enc = ContrastiveEncoder(peft_model)
    opt = torch.optim.AdamW(param_groups(enc, 0.0), lr=1e-2)
    for seed in range(3):
        contrastive_step(enc, [random_batch(8, seed=seed)])
        opt.step()
        opt.zero_grad()
    batch = random_batch(6, seed=9)
    peft_model.eval()
    with torch.no_grad():
        adapter_out = peft_model(**batch)
        base_out = base(**batch)
        merged = peft_model.merge_and_unload()
        merged_out = merged(**batch)
    assert type(merged).__name__ == "CLIPModel"
    assert torch.allclose(adapter_out.image_embeds, merged_out.image_embeds, atol=1e-5)
    assert torch.allclose(adapter_out.text_embeds, merged_out.text_embeds, atol=1e-5)
    assert not torch.allclose(base_out.text_embeds, merged_out.text_embeds, atol=1e-3)

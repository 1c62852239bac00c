"""Model loading: save/load round trip through from_pretrained, run folders, refusal of unsafe files."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from workbench.models import DEMO_MODEL, ModelLoadError, load_clip, model_fingerprint, resolve_model_path, save_clip


def _features(model, processor):
    tok = processor.tokenizer(["a red circle", "a small brown circle"], padding=True, return_tensors="pt")
    pixels = torch.linspace(-1, 1, 2 * 3 * 32 * 32).view(2, 3, 32, 32)
    with torch.no_grad():
        return (
            model.get_text_features(**tok).pooler_output,
            model.get_image_features(pixel_values=pixels).pooler_output,
        )


def test_save_then_load_gives_identical_model(tiny_clip, tmp_path):
    model, processor = tiny_clip
    save_clip(model, processor, tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").exists()
    loaded, loaded_proc = load_clip(str(tmp_path / "m"))
    assert model_fingerprint(loaded) == model_fingerprint(model)
    for a, b in zip(_features(model, processor), _features(loaded, loaded_proc)):
        assert torch.equal(a, b)
    assert loaded_proc.tokenizer("a red circle")["input_ids"] == processor.tokenizer("a red circle")["input_ids"]
    assert loaded_proc.image_processor.crop_size == processor.image_processor.crop_size


def test_fingerprint_changes_with_any_weight(tiny_clip):
    model, _ = tiny_clip
    before = model_fingerprint(model)
    with torch.no_grad():
        model.logit_scale.add_(1e-3)
    assert model_fingerprint(model) != before


def test_run_folder_resolves_to_its_model(tiny_clip, tmp_path):
    model, processor = tiny_clip
    run = tmp_path / "run"
    save_clip(model, processor, run / "model")
    (run / "config.json").write_text(json.dumps({"strategy": "full"}))
    assert resolve_model_path(str(run)) == str(run / "model")
    loaded, _ = load_clip(str(run))
    assert model_fingerprint(loaded) == model_fingerprint(model)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_weights_are_refused_and_never_unpickled(tiny_clip, tmp_path):
    model, processor = tiny_clip
    folder = tmp_path / "evil"
    folder.mkdir()
    model.config.save_pretrained(folder)
    processor.save_pretrained(folder)
    marker = tmp_path / "pwned"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(ModelLoadError, match="only pickled weights .*pytorch_model.bin.*safetensors"):
        load_clip(str(folder))
    assert not marker.exists()


def test_remote_code_in_config_is_not_run_by_default(tiny_clip, tmp_path):
    model, processor = tiny_clip
    save_clip(model, processor, tmp_path / "m")
    marker = tmp_path / "remote-code-ran"
    (tmp_path / "m" / "evil_modeling.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "evil_modeling.EvilModel", "AutoConfig": "evil_modeling.EvilConfig"}
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    loaded, _ = load_clip(str(tmp_path / "m"))
    assert not marker.exists()
    assert model_fingerprint(loaded) == model_fingerprint(model)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="cannot load CLIP model"):
        load_clip(str(tmp_path / "nothing-here"))
    with pytest.raises(ModelLoadError, match="cannot load CLIP model 'nobody/no-such-clip'"):
        load_clip("nobody/no-such-clip")


def test_demo_base_loads_by_name_like_a_hub_model():
    model, processor = load_clip(DEMO_MODEL)
    assert model.config.vision_config.image_size == 64
    assert model.config.text_config.eos_token_id == processor.tokenizer.eos_token_id
    assert model.config.text_config.vocab_size == len(processor.tokenizer)

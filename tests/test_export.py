"""ONNX export: parity with PyTorch on the demo model, a dynamic batch axis, and failures reported as failures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the export extra is not installed (pip install .[export]; "
                                          ".dev/setup --tests installs it)")

from workbench.data import DEMO_DATASET  # noqa: E402  (after the skip above)
from workbench.export import (  # noqa: E402
    IMAGE_FILE,
    MANIFEST_FILE,
    TEXT_FILE,
    check_parity,
    export_onnx,
    onnx_image_embeddings,
    onnx_text_embeddings,
    parity_inputs,
)
from workbench.export.onnx import _session  # noqa: E402
from workbench.models import DEMO_MODEL, load_clip  # noqa: E402

# Fast enough for every run: the first rows of the demo test split (the slow test takes all of it).
FAST_ROWS = 48


@pytest.fixture(scope="module")
def demo():
    return load_clip(DEMO_MODEL)


@pytest.fixture(scope="module")
def inputs(demo):
    return parity_inputs(DEMO_DATASET, demo[1].image_processor, max_rows=FAST_ROWS)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "onnx"
    folder, report = export_onnx(DEMO_MODEL, out, data=DEMO_DATASET, parity_rows=FAST_ROWS)
    return folder, report


@pytest.mark.slow  # exports the demo model (~20 s); runs in CI
def test_demo_export_matches_pytorch(exported, demo, inputs):
    folder, report = exported
    assert report.passed
    by_name = {c.name: c for c in report.checks}
    assert set(by_name) == {"image_encoder_loads", "text_encoder_loads", "image_embeddings", "text_embeddings",
                            "zero_shot_predictions"}
    assert by_name["image_embeddings"].value < 1e-4 and by_name["text_embeddings"].value < 1e-4
    assert by_name["zero_shot_predictions"].value == 0
    for name in (IMAGE_FILE, TEXT_FILE, IMAGE_FILE + ".data", TEXT_FILE + ".data", MANIFEST_FILE):
        assert (folder / name).is_file(), name
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert manifest["parity"]["passed"] and manifest["parity_data"].endswith(f"{FAST_ROWS} images")
    model, processor = demo
    assert manifest["logit_scale"] == pytest.approx(float(model.logit_scale.detach().exp()))
    # Re-running the check on the written folder gives the same numbers (the check reads only the folder).
    again = check_parity(folder, model, processor, inputs)
    assert [c.value for c in again.checks] == [c.value for c in report.checks]


@pytest.mark.slow  # exports the demo model (~20 s); runs in CI
def test_processor_and_tokenizer_beside_the_encoders(exported, demo):
    from transformers import CLIPProcessor

    folder, _ = exported
    saved = CLIPProcessor.from_pretrained(str(folder))
    _, processor = demo
    texts = ["a dermoscopy image of a melanoma", "close-up of a waxy seborrheic keratosis"]
    assert saved.tokenizer(texts)["input_ids"] == processor.tokenizer(texts)["input_ids"]
    assert saved.image_processor.to_dict() == processor.image_processor.to_dict()


@pytest.mark.slow  # exports the demo model (~20 s); runs in CI
def test_batch_axis_is_dynamic(exported, demo, inputs):
    """Batches of 1, 3 and 7 images (and texts) give the rows the whole batch gives."""
    folder, _ = exported
    model, processor = demo
    session = _session(folder / IMAGE_FILE)
    whole = onnx_image_embeddings(session, inputs.pixels_u8[:21], processor.image_processor, batch_size=21)
    for size in (1, 3, 7):
        parts = onnx_image_embeddings(session, inputs.pixels_u8[:21], processor.image_processor, batch_size=size)
        assert parts.shape == whole.shape and np.abs(parts - whole).max() < 1e-5
    text_session = _session(folder / TEXT_FILE)
    texts = inputs.captions[:9]
    context = int(model.config.text_config.max_position_embeddings)
    one_batch = onnx_text_embeddings(text_session, processor.tokenizer, texts, context, batch_size=9)
    singles = onnx_text_embeddings(text_session, processor.tokenizer, texts, context, batch_size=1)
    assert np.abs(one_batch - singles).max() < 1e-5


def _copy(folder: Path, target: Path) -> Path:
    shutil.copytree(folder, target)
    return target


def _scale_projection(model_file: Path, factor: float) -> None:
    """Multiply the encoder's projection weight by ``factor``: the file stays valid, the numbers go wrong."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_file))  # with its external data
    (weight,) = [t for t in model.graph.initializer if t.name.endswith("projection.weight")]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(factor), weight.name))
    data_file = model_file.with_name(model_file.name + ".data")
    data_file.unlink()  # onnx appends to an existing data file
    onnx.save_model(model, str(model_file), save_as_external_data=True, location=data_file.name)


@pytest.mark.slow  # exports the demo model (~20 s); runs in CI
def test_corrupted_weights_are_a_failure(exported, demo, inputs, tmp_path):
    folder = _copy(exported[0], tmp_path / "corrupt")
    _scale_projection(folder / IMAGE_FILE, -1.0)  # the file still loads: only the numbers are wrong
    report = check_parity(folder, *demo, inputs)
    assert not report.passed
    failure = report.first_failure()
    assert failure.name == "image_embeddings" and failure.value > 1e-4
    assert "image_encoder_loads" in {c.name for c in report.checks if c.passed}


@pytest.mark.slow  # exports the demo model (~20 s); runs in CI
def test_truncated_file_is_a_failure(exported, demo, inputs, tmp_path):
    folder = _copy(exported[0], tmp_path / "truncated")
    model_file = folder / TEXT_FILE
    model_file.write_bytes(model_file.read_bytes()[:1000])
    report = check_parity(folder, *demo, inputs)
    assert not report.passed
    failure = report.first_failure()
    assert failure.name == "text_encoder_loads" and "onnxruntime cannot load" in failure.detail


@pytest.mark.slow  # exports the demo model (~20 s); runs in CI
def test_cli_refuses_a_wrong_export_with_one_line_and_writes_nothing(exported, monkeypatch, tmp_path, capsys):
    """A deliberately wrong export (text weights scaled) fails the parity check: exit 1, one line, no folder."""
    from workbench.export import onnx as export_onnx_module
    from workbench.export.__main__ import main

    good = exported[0]

    def wrong_export(model, processor, folder, *, opset):
        for item in good.iterdir():
            shutil.copy(item, Path(folder) / item.name)
        _scale_projection(Path(folder) / TEXT_FILE, -1.0)

    monkeypatch.setattr(export_onnx_module, "write_onnx_encoders", wrong_export)
    out = tmp_path / "cli-out"
    code = main(["onnx", DEMO_MODEL, "--output", str(out), "--parity-rows", "16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    ours = [line for line in err if not line.startswith("Loading weights")]  # transformers' own progress bar
    assert len(ours) == 1 and ours[0].startswith("export failed: parity check 'text_embeddings' failed")
    assert not out.exists()


def test_export_error_names_the_flag_before_any_export(tmp_path, monkeypatch, capsys):
    from workbench.export import onnx as export_onnx_module
    from workbench.export.__main__ import main

    def must_not_run(*args, **kwargs):
        raise AssertionError("the export ran although the parity data is wrong")

    monkeypatch.setattr(export_onnx_module, "write_onnx_encoders", must_not_run)
    code = main(["onnx", DEMO_MODEL, "--output", str(tmp_path / "x"), "--label-column", "diagnosis"])
    err = capsys.readouterr().err
    assert code == 2 and "diagnosis" in err and "--label-column" in err


@pytest.mark.slow
def test_cli_whole_demo_test_split(tmp_path, capsys):
    """The issue's done-when: the demo model's export matches PyTorch on every image of the demo test split."""
    from workbench.export.__main__ import main

    out = tmp_path / "onnx"
    assert main(["onnx", DEMO_MODEL, "--output", str(out)]) == 0
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    checks = {c["name"]: c for c in manifest["parity"]["checks"]}
    assert manifest["parity_data"].endswith("1200 images")
    assert checks["zero_shot_predictions"]["value"] == 0 and checks["image_embeddings"]["value"] < 1e-4
    assert "PASS zero_shot_predictions" in capsys.readouterr().out


@pytest.mark.slow  # exports the demo model (~20 s); runs in CI
def test_a_run_folder_brings_its_own_parity_data_and_output(tmp_path):
    from workbench import schema
    from workbench.export import default_export_dir, run_settings

    run = tmp_path / "run"
    (run / schema.RUN_MODEL_DIR).mkdir(parents=True)
    (run / schema.RUN_CONFIG_FILE).write_text(json.dumps({"recipe": "medical", "config": {
        "dataset": "some/data", "image_column": "img", "caption_column": "", "label_column": "dx",
        "templates": ["a dermoscopy image of {}."], "test_split": "holdout"}}))
    assert run_settings(str(run)) == {"dataset": "some/data", "image_column": "img", "label_column": "dx",
                                      "templates": ["a dermoscopy image of {}."], "caption_column": None,
                                      "split": "holdout"}
    assert default_export_dir(str(run)) == run / "onnx"
    assert run_settings(DEMO_MODEL) == {} and default_export_dir(DEMO_MODEL) is None

"""Bad data through the whole path: every hostile row is skipped and counted, converted, or named in a one-line error."""

from __future__ import annotations

import csv
import io
import json

import pytest

from conftest import TINY_AUDIT, run_child, tiny_finetune_config
from hostile_data import HOSTILE_GROUP, LONG_CAPTION, ONCE_GROUP, RTL_CAPTION, make_hostile_csv

from workbench.audit import run_audit
from workbench.data import ColumnMap, DataError, load_splits, pixels_for
from workbench.demo.derm import generate_derm
from workbench.report import write_report
from workbench.train.pairs import build_pair_data
from workbench.train.run import finetune

GROUPS = ("skin_tone", "sex")

@pytest.fixture(scope="session")
def hostile(tmp_path_factory):
    good = generate_derm({"train": 40}, seed=7)["train"]
    rows = [{"caption": r["caption"], "label": r["label"], "skin_tone": r["skin_tone"], "sex": r["sex"]} for r in good]
    return make_hostile_csv(tmp_path_factory.mktemp("hostile") / "data", list(good["image"]), rows)


def test_unreadable_images_are_skipped_with_reasons_and_odd_ones_converted(hostile, tiny_clip, capsys):
    split = load_splits(str(hostile.folder / "train.csv"), ColumnMap(groups=GROUPS), splits=["train"])["train"]
    out = capsys.readouterr().out
    dup, first = hostile.duplicate_of
    assert f"1 duplicate row(s)" in out and f"row {dup} repeats row {first}" in out
    assert split["caption"][hostile.long_caption_row] == LONG_CAPTION
    assert RTL_CAPTION in split["caption"]

    pix = pixels_for(split, tiny_clip[1].image_processor, progress=False)
    reasons = dict(pix.bad_rows)
    assert set(reasons) == set(hostile.bad_train)
    for row, words in hostile.bad_train.items():
        assert words in reasons[row].lower(), (row, reasons[row])
        assert "\n" not in reasons[row]
    assert int(pix.valid.sum()) == hostile.n_train - len(hostile.bad_train)
    for kind, row in hostile.converted.items():
        assert pix.valid[row], kind
    # EXIF orientation applied: the rotated file decodes to the upright picture, not to its stored pixels.
    upright = pix.pixels[hostile.converted["upright"]].float()
    turned = pix.pixels[hostile.converted["exif"]].float()
    assert (turned - upright).abs().mean() < 8
    assert (turned.transpose(1, 2) - upright).abs().mean() > 40
    # CMYK and palette keep their colours: red left, blue right.
    for kind in ("cmyk", "palette"):
        px = pix.pixels[hostile.converted[kind]].float()
        assert px[0, :, :8].mean() > 150 and px[2, :, -8:].mean() > 150, kind


def test_decompression_bomb_is_refused_without_allocating_it(hostile):
    code = f"""
        import resource
        from workbench.data import decode_image
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            decode_image({str(hostile.folder / "images" / "bomb.png")!r})
            print("DECODED")
        except ValueError as err:
            print("REFUSED", err)
        print("GROWTH_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
    """
    result = run_child(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "REFUSED" in result.stdout and "decompression-bomb guard" in result.stdout
    growth_kb = int(result.stdout.split("GROWTH_KB")[1].split()[0])
    assert growth_kb < 100_000  # decoding would take 400 MB (grey) or 1.2 GB (RGB)


def test_long_caption_truncation_is_counted_and_reported(hostile, tiny_clip, capsys):
    split = load_splits(str(hostile.folder / "train.csv"), ColumnMap(groups=GROUPS), splits=["train"])["train"]
    pairs = build_pair_data(split, tiny_clip[1], max_length=40, progress=False)
    assert max(len(t) for t in pairs.token_ids) == 40
    out = capsys.readouterr().out
    assert "1 caption(s) longer than the text context (40 tokens) were truncated" in out


@pytest.mark.slow
def test_fine_tune_audit_and_report_survive_the_hostile_set(hostile, model_dir, tmp_path, capsys):
    run = finetune(
        tiny_finetune_config(model_dir, hostile.folder, tmp_path / "run", validation_split="", test_split="test",
                             group_columns=list(GROUPS), max_steps=2, checkpoint_steps=0),
        recipe="reliability",
    )
    out = capsys.readouterr().out
    n_bad = len(hostile.bad_train)
    assert f"skipping {n_bad} training rows with unreadable images" in out
    config = json.loads((run / "config.json").read_text())
    assert config["train_pairs"] == hostile.n_train - n_bad
    assert config["truncated_captions"] == 1  # the 10,000-character caption, counted in the run's record
    assert (run / "model" / "model.safetensors").is_file()

    spec = tmp_path / "hostile.yaml"
    spec.write_text(TINY_AUDIT)
    result = run_audit(spec, run, str(hostile.folder), split="test", cache_dir=None, progress=False)
    data = result.summary["data"]
    assert data["n"] == hostile.n_test - len(hostile.bad_test)
    assert data["n_undecodable"] == len(hostile.bad_test)
    assert any(f"{len(hostile.bad_test)} image(s) could not be decoded" in w for w in result.summary["warnings"])
    once = result.results[(result.results["group"] == ONCE_GROUP) & (result.results["metric"] == "accuracy")]
    assert len(once) and set(once["status"]) == {"small_group"}
    assert set(once["n"]) == {1}

    html_path, card_path = write_report(run)
    html, card = html_path.read_text(), card_path.read_text()
    assert "<script>" not in html and 'href="javascript' not in html  # HTML shows the text, never runs it
    assert "<script>" not in card and "](javascript:" not in card  # Markdown: no live tag, no live link
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert HOSTILE_GROUP in set(result.results["group"])


def _error_of(model_dir, data, tmp_path, **overrides) -> str:
    with pytest.raises(DataError) as err:
        finetune(tiny_finetune_config(model_dir, data, tmp_path / "run", validation_split="", **overrides), recipe="reliability")
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before training
    message = str(err.value)
    assert "\n" not in message
    return message


def _rows(hostile, n: int = 20) -> list[dict]:
    with open(hostile.folder / "train.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:n]
    return [{**r, "image": str(hostile.folder / r["image"]), "site": "clinic"} for r in rows]


def _write(path, rows: list[dict], latin1_row: int | None = None) -> None:
    """A CSV file; ``latin1_row`` is encoded as Latin-1 (the rest as UTF-8)."""
    lines = []
    for i, r in enumerate([dict(zip(rows[0], rows[0]))] + rows):
        buf = io.StringIO()
        csv.writer(buf).writerow(list(r.values()))
        lines.append(buf.getvalue().encode("latin-1" if latin1_row is not None and i - 1 == latin1_row else "utf-8"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines))


def test_empty_caption_is_an_error_naming_row_and_column(hostile, model_dir, tmp_path):
    rows = _rows(hostile)
    rows[5]["caption"] = ""
    _write(tmp_path / "d" / "train.csv", rows)
    msg = _error_of(model_dir, tmp_path / "d", tmp_path, test_split="")
    assert "row 5" in msg and "caption" in msg


@pytest.mark.slow
def test_label_outside_the_class_list_joins_fine_tuning_and_is_named_by_the_audit(hostile, model_dir, tmp_path):
    rows = _rows(hostile)
    _write(tmp_path / "d" / "train.csv", rows)
    test = [dict(r) for r in rows[:6]]
    test[4]["label"] = "not-a-class"
    _write(tmp_path / "d" / "test.csv", test)
    # Fine-tuning: a label only the evaluation split has is one more zero-shot class, recorded in config.json.
    run = finetune(tiny_finetune_config(model_dir, tmp_path / "d", tmp_path / "run", validation_split="", test_split="test",
                                        max_steps=1, checkpoint_steps=0), recipe="reliability")
    assert json.loads((run / "config.json").read_text())["class_names"][-1] == "not-a-class"
    # Audit with a fixed class list: accuracy is not computed, and the reason names the label and its count.
    spec = tmp_path / "labels.yaml"
    spec.write_text(TINY_AUDIT.replace('templates: ["a photo of {}"]', 'labels: [melanoma, nevus, basal cell carcinoma, '
                                       'seborrheic keratosis]\n  templates: ["a photo of {}"]'))
    result = run_audit(spec, str(model_dir), str(tmp_path / "d"), split="test", cache_dir=None, progress=False)
    reasons = [n["reason"] for n in result.summary["not_computed"]]
    assert any("'not-a-class' (1 images)" in r for r in reasons), reasons
    assert result.results.query("metric == 'accuracy'")["status"].eq("not_computed").all()


def test_all_null_group_column_is_an_error_naming_the_column(hostile, model_dir, tmp_path):
    rows = [{**r, "site": ""} for r in _rows(hostile)]
    _write(tmp_path / "d" / "train.csv", rows)
    msg = _error_of(model_dir, tmp_path / "d", tmp_path, test_split="", group_columns=["site"])
    assert "'site'" in msg and "every row" in msg


def test_non_utf8_text_is_an_error_naming_row_and_column(hostile, model_dir, tmp_path):
    rows = _rows(hostile)
    rows[7]["caption"] = "l\u00e9sion pigment\u00e9e"
    _write(tmp_path / "d" / "train.csv", rows, latin1_row=7)
    msg = _error_of(model_dir, tmp_path / "d", tmp_path, test_split="")
    assert "row 7" in msg and "'caption'" in msg and "UTF-8" in msg

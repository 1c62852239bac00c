"""Data loading: every source path gives the same rows; validation names the column; bad images counted."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from workbench.data import (
    DEMO_DATASET,
    ColumnMap,
    DataError,
    class_names_of,
    decode_image,
    load_splits,
    normalize_pixels,
    pad_token_ids,
    pixels_for,
    preprocess_uint8,
    tokenize_captions,
)
from workbench.data.images import _pil_resize_crop_plan

COLS = ColumnMap(groups=("skin_tone", "sex"))


def _decoded(ds) -> list[np.ndarray]:
    return [np.asarray(decode_image(v)) for v in ds["image"]]


def _export_files(ds, folder, *, fmt: str):
    """Write a split as PNG files plus a table of relative paths (parquet, CSV or metadata.jsonl)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, ex in enumerate(ds):
        name = f"img_{i:04d}.png"
        ex["image"].save(folder / name)
        rows.append({"file_name": name, "caption": ex["caption"], "label": ex["label"], "skin_tone": ex["skin_tone"], "sex": ex["sex"]})
    df = pd.DataFrame(rows)
    if fmt == "parquet":
        df.rename(columns={"file_name": "image"}).to_parquet(folder / "train.parquet")
    elif fmt == "csv":
        df.rename(columns={"file_name": "image"}).to_csv(folder / "train.csv", index=False)
    elif fmt == "imagefolder":
        with open(folder / "metadata.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return folder


@pytest.mark.parametrize("fmt", ["save_to_disk", "imagefolder", "parquet", "csv"])
def test_every_loader_path_round_trips_the_same_rows(small_derm, tmp_path, fmt):
    split = small_derm["train"].select(range(12))
    if fmt == "save_to_disk":
        import datasets

        datasets.DatasetDict({"train": split}).save_to_disk(str(tmp_path / "ds"))
        source, cols = str(tmp_path / "ds"), COLS
    else:
        source = str(_export_files(split, tmp_path / "files", fmt=fmt))
        cols = COLS
    loaded = load_splits(source, cols, splits=["train"])["train"]
    assert len(loaded) == 12
    assert loaded["caption"] == split["caption"]
    assert loaded["label"] == split["label"]
    assert loaded["skin_tone"] == split["skin_tone"] and loaded["sex"] == split["sex"]
    expected = [np.asarray(im) for im in split["image"]]
    assert all(np.array_equal(a, b) for a, b in zip(_decoded(loaded), expected))
    assert loaded["row"] == list(range(12))


def test_single_parquet_file_with_relative_paths(small_derm, tmp_path):
    folder = _export_files(small_derm["train"].select(range(5)), tmp_path / "p", fmt="parquet")
    loaded = load_splits(str(folder / "train.parquet"), COLS)["train"]
    assert len(loaded) == 5 and loaded["label"] == small_derm["train"]["label"][:5]


def test_demo_dataset_name_loads_canonical_splits():
    dd = load_splits(DEMO_DATASET, COLS)
    assert set(dd) == {"train", "validation", "test"}
    assert set(dd["test"].column_names) == {"row", "image", "caption", "label", "skin_tone", "sex"}
    assert len(dd["test"]) == 1200


def test_missing_column_error_names_column_and_flag(small_derm, tmp_path):
    small_derm.save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(DataError) as err:
        load_splits(str(tmp_path / "ds"), ColumnMap(groups=("age",)))
    msg = str(err.value)
    assert "'age'" in msg and "--group-columns" in msg and "skin_tone" in msg and "\n" not in msg


def test_label_outside_class_list_names_the_row(small_derm, tmp_path):
    small_derm.save_to_disk(str(tmp_path / "ds"))
    bad_row = small_derm["train"]["label"].index("nevus")
    with pytest.raises(DataError, match=rf"row {bad_row}: label 'nevus'"):
        load_splits(str(tmp_path / "ds"), COLS, splits=["train"], class_names=["melanoma", "basal cell carcinoma", "seborrheic keratosis"])


def test_empty_split_and_missing_split(small_derm, tmp_path):
    folder = _export_files(small_derm["train"].select(range(4)), tmp_path / "f", fmt="csv")
    header = (folder / "train.csv").read_text().splitlines()[0]
    (folder / "test.csv").write_text(header + "\n")
    with pytest.raises(DataError, match=r"test.csv: split 'test' is empty"):
        load_splits(str(folder), COLS, splits=["test"])
    (folder / "test.csv").unlink()
    with pytest.raises(DataError, match="no split 'validation'; available splits: train"):
        load_splits(str(folder), COLS, splits=["validation"])


def test_all_null_group_column_is_an_error_partial_nulls_are_a_group(small_derm, tmp_path):
    split = small_derm["train"].select(range(6))
    nulls = split.map(lambda ex: {"sex": None}).cast_column("sex", small_derm["train"].features["sex"])
    import datasets

    datasets.DatasetDict({"train": nulls}).save_to_disk(str(tmp_path / "allnull"))
    with pytest.raises(DataError, match="group column 'sex' is empty in every row"):
        load_splits(str(tmp_path / "allnull"), COLS)
    some = split.map(lambda ex, i: {"sex": None if i == 0 else ex["sex"]}, with_indices=True)
    datasets.DatasetDict({"train": some}).save_to_disk(str(tmp_path / "some"))
    loaded = load_splits(str(tmp_path / "some"), COLS)["train"]
    assert loaded["sex"][0] == "(missing)" and loaded["sex"][1:] == split["sex"][1:]


def test_hub_id_unreachable_is_a_clear_error():
    with pytest.raises(DataError, match="cannot load dataset 'someone/not-here'"):
        load_splits("someone/not-here", COLS)


def test_class_label_ints_become_names(tmp_path, small_derm):
    import datasets

    names = ["melanoma", "nevus", "basal cell carcinoma", "seborrheic keratosis"]
    ds = small_derm["train"].select(range(8)).cast_column("label", datasets.ClassLabel(names=names))
    # Group codes in an order unlike the demo's: must come back as names, never as "0", "1".
    ds = ds.cast_column("skin_tone", datasets.ClassLabel(names=["dark", "medium", "light"]))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "cl"))
    loaded = load_splits(str(tmp_path / "cl"), COLS)["train"]
    assert loaded["label"] == small_derm["train"]["label"][:8]
    assert loaded["skin_tone"] == small_derm["train"]["skin_tone"][:8]
    assert class_names_of(loaded) == names


def _png_bytes(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def test_corrupt_images_are_skipped_and_counted(tmp_path, tiny_clip):
    _, processor = tiny_clip
    good = Image.fromarray(np.full((40, 40, 3), 120, np.uint8))
    (tmp_path / "ok1.png").write_bytes(_png_bytes(good))
    (tmp_path / "ok2.jpg").write_bytes(_png_bytes(good, "JPEG"))
    (tmp_path / "truncated.png").write_bytes(_png_bytes(good)[:60])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("this is not an image")
    names = ["ok1.png", "truncated.png", "ok2.jpg", "empty.png", "text.png"]
    pd.DataFrame({"image": names, "caption": ["c"] * 5, "label": ["x"] * 5}).to_csv(tmp_path / "train.csv", index=False)
    ds = load_splits(str(tmp_path / "train.csv"), ColumnMap())["train"]
    pix = pixels_for(ds, processor.image_processor, progress=False)
    assert pix.n_bad == 3
    assert [r for r, _ in pix.bad_rows] == [1, 3, 4]
    assert pix.valid.tolist() == [True, False, True, False, False]
    reasons = dict(pix.bad_rows)
    assert "zero-byte" in reasons[3] and "not a readable image" in reasons[4]
    assert int(pix.pixels[1].sum()) == 0 and int(pix.pixels[0].float().mean()) == 120


@pytest.mark.parametrize(
    "mode,expect",
    [("L", (77, 77, 77)), ("RGBA", (255, 255, 255)), ("P", (10, 20, 30)), ("CMYK", None), ("I;16", (255, 255, 255))],
)
def test_modes_become_rgb(mode, expect):
    if mode == "L":
        im = Image.new("L", (4, 4), 77)
    elif mode == "RGBA":
        im = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent -> white background
    elif mode == "P":
        im = Image.new("RGB", (4, 4), (10, 20, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    elif mode == "CMYK":
        im = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    else:
        im = Image.fromarray(np.array([[0, 1000], [65535, 65535]], dtype=np.uint16))
    out = decode_image(im)
    assert out.mode == "RGB"
    px = out.getpixel((out.width - 1, out.height - 1))
    if expect is None:
        assert px[0] > 200 and px[1] < 50 and px[2] < 50
    else:
        assert px == expect


def test_exif_rotation_is_applied():
    im = Image.new("RGB", (30, 10), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif)
    assert decode_image(buf.getvalue()).size == (10, 30)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(path)
    with pytest.raises(ValueError, match="exceeds the 64,000,000-pixel limit"):
        decode_image(str(path))


def test_normalize_matches_the_image_processor(tiny_clip):
    _, processor = tiny_clip
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)) for _ in range(3)]
    ours = normalize_pixels(torch.from_numpy(preprocess_uint8(images, processor.image_processor)), processor.image_processor)
    ref = torch.from_numpy(processor.image_processor(images=images, return_tensors="np")["pixel_values"])
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("size, crop, resample", [(224, 224, 3), (64, 64, 3), (96, 80, 2), (224, 200, 1)])
def test_fast_resize_and_crop_is_bit_identical_to_the_processor(size, crop, resample):
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": crop, "width": crop},
                                   resample=resample)
    assert _pil_resize_crop_plan(processor) == (size, crop, crop, resample)  # the fast path is taken
    rng = np.random.default_rng(size + crop)
    shapes = [(480, 640), (640, 480), (300, 301), (225, 1000), (size, size), (1000, 230), (511, 513), (97, 64)]
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in shapes]
    ref = processor(images=images, do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(preprocess_uint8(images, processor), np.clip(np.rint(ref), 0, 255).astype(np.uint8))


def test_resize_rules_the_fast_path_does_not_cover_go_through_the_processor():
    from transformers import CLIPImageProcessor

    square = CLIPImageProcessor(size={"height": 48, "width": 40}, do_center_crop=False)
    assert _pil_resize_crop_plan(square) is None
    images = [Image.fromarray(np.full((30, 90, 3), 7, dtype=np.uint8))]
    assert preprocess_uint8(images, square).shape == (1, 3, 48, 40)
    # An image that would need padding after the resize is left to the processor as well.
    small_crop = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 40, "width": 40})
    assert preprocess_uint8(images, small_crop).shape == (1, 3, 40, 40)


def test_pixel_cache_on_disk_is_reused(small_derm, tiny_clip, tmp_path):
    _, processor = tiny_clip
    split = small_derm["test"]
    import datasets

    datasets.DatasetDict({"test": split}).save_to_disk(str(tmp_path / "ds"))
    ds = load_splits(str(tmp_path / "ds"), COLS)["test"]
    first = pixels_for(ds, processor.image_processor, cache_dir=tmp_path / "cache", progress=False)
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".npy")
    second = pixels_for(ds, processor.image_processor, cache_dir=tmp_path / "cache", progress=False)
    assert torch.equal(first.pixels, second.pixels) and second.pixels.shape == (32, 3, 32, 32)


def test_long_captions_truncate_to_context_and_keep_end_token(tiny_tokenizer):
    ids, truncated = tokenize_captions(tiny_tokenizer, ["a red circle", "red " * 5000], max_length=40)
    assert truncated == [1]
    assert len(ids[1]) == 40 and ids[1][-1] == tiny_tokenizer.eos_token_id
    input_ids, mask = pad_token_ids(ids, tiny_tokenizer.pad_token_id)
    assert input_ids.shape == (2, 40) and mask[0].sum() == len(ids[0])

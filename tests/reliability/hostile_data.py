"""One generated CSV data set holding every kind of bad input the workbench must survive.

``make_hostile_csv(folder)`` writes train.csv and test.csv plus image files and returns
what a run on it must report (which rows are unreadable and why, which are converted).
"""

from __future__ import annotations

import csv
import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

HOSTILE_GROUP = "<script>alert('x')</script> **bold** | [link](javascript:alert(1))"
ONCE_GROUP = "seen-once"
RTL_CAPTION = "\u05e0\u05d2\u05e2 \u05e2\u05d5\u05e8 \u0622\u0641\u0629 \u062c\u0644\u062f\u064a\u0629 melanoma"
LONG_CAPTION = ("a very long clinical description of a nevus " * 250)[:10_000]


@dataclass
class Hostile:
    folder: Path
    n_train: int
    bad_train: dict[int, str] = field(default_factory=dict)  # row -> words the reason must contain
    converted: dict[str, int] = field(default_factory=dict)  # kind -> train row
    long_caption_row: int = -1
    duplicate_of: tuple[int, int] = (-1, -1)  # (row, earlier row)
    n_test: int = 0
    bad_test: set[int] = field(default_factory=set)


def _png_bomb(path: Path, side: int = 20_000) -> None:
    """A valid, fully compressed 8-bit grey PNG of side x side zeros (about 0.4 MB on disk, 400 MB decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    parts = [comp.compress(row) for _ in range(side)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))


def _two_colour(w: int, h: int) -> Image.Image:
    """Left half red, right half blue: any rotation or mirroring changes its pixels."""
    im = Image.new("RGB", (w, h), (220, 20, 20))
    im.paste((20, 20, 220), (w // 2, 0, w, h))
    return im


def make_hostile_csv(folder: Path, good_images: list[Image.Image], good_rows: list[dict]) -> Hostile:
    """Write train.csv/test.csv with ``good_rows`` (caption, label, skin_tone, sex) plus the hostile rows."""
    folder.mkdir(parents=True, exist_ok=True)
    img_dir = folder / "images"
    img_dir.mkdir(exist_ok=True)
    rows = []
    for i, (im, r) in enumerate(zip(good_images, good_rows)):
        name = f"good_{i:03d}.png"
        im.save(img_dir / name)
        rows.append({"image": f"images/{name}", **r})
    base = dict(good_rows[0])
    h = Hostile(folder=folder, n_train=0)

    def add(name: str, **over) -> int:
        rows.append({**base, "image": f"images/{name}", **over})
        return len(rows) - 1

    # Unreadable: skipped and counted, with the reason.
    buf = io.BytesIO()
    _two_colour(64, 64).save(buf, format="JPEG", quality=90)
    (img_dir / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    h.bad_train[add("truncated.jpg")] = "truncated"
    (img_dir / "empty.jpg").write_bytes(b"")
    h.bad_train[add("empty.jpg")] = "zero-byte"
    (img_dir / "notes.png").write_text("this is a text file, not a picture\n")
    h.bad_train[add("notes.png")] = "not a readable image"
    _png_bomb(img_dir / "bomb.png")
    h.bad_train[add("bomb.png")] = "decompression-bomb"
    h.bad_train[add("missing.png")] = "cannot read"
    # Readable but unusual: converted to RGB.
    Image.new("RGB", (1, 1), (10, 200, 30)).save(img_dir / "one_pixel.png")
    h.converted["1x1"] = add("one_pixel.png")
    _two_colour(48, 48).convert("CMYK").save(img_dir / "cmyk.jpg", quality=95)
    h.converted["cmyk"] = add("cmyk.jpg")
    Image.new("I;16", (40, 40), 40000).save(img_dir / "sixteen.png")
    h.converted["16-bit"] = add("sixteen.png")
    _two_colour(48, 48).convert("P", palette=Image.ADAPTIVE, colors=4).save(img_dir / "palette.png")
    h.converted["palette"] = add("palette.png")
    upright = _two_colour(64, 32)
    upright.save(img_dir / "upright.jpg", quality=95)
    h.converted["upright"] = add("upright.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the stored pixels must be turned 90 degrees clockwise to view
    upright.transpose(Image.Transpose.ROTATE_90).save(img_dir / "exif_rotated.jpg", quality=95, exif=exif)
    h.converted["exif"] = add("exif_rotated.jpg")
    # Text: right-to-left script, a 10,000-character caption, an exact duplicate row.
    add(rows[1]["image"].split("/")[-1], caption=RTL_CAPTION)
    h.long_caption_row = add(rows[2]["image"].split("/")[-1], caption=LONG_CAPTION)
    rows.append(dict(rows[3]))
    h.duplicate_of = (len(rows) - 1, 3)
    h.n_train = len(rows)
    _write_csv(folder / "train.csv", rows)

    # Test split: a group value seen once, hostile group text, and two unreadable images.
    test = [dict(r) for r in rows[: len(good_rows)]]
    test[0]["skin_tone"] = ONCE_GROUP
    for r in test[1:4]:
        r["sex"] = HOSTILE_GROUP
    test.append({**base, "image": "images/empty.jpg"})
    test.append({**base, "image": "images/bomb.png"})
    h.bad_test = {len(test) - 2, len(test) - 1}
    h.n_test = len(test)
    _write_csv(folder / "test.csv", test)
    return h


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

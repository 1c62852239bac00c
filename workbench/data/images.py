"""Images: safe decoding, and each split decoded once into uint8 pixels at the model's input size.

Images are decoded by :func:`decode_image` (never by ``datasets``), so a truncated or
hostile file is skipped and counted instead of ending an epoch.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from workbench.data.canonical import dataset_fingerprint
from workbench.io import atomic_path, atomic_write_json

# Pixels above this are refused before decoding (PIL raises DecompressionBombError past 2x).
MAX_IMAGE_PIXELS = 64_000_000


def decode_image(value, *, max_pixels: int = MAX_IMAGE_PIXELS, draft_size: int | None = None) -> Image.Image:
    """Decode one image (bytes/path dict, path, PIL image or array) into RGB, safely.

    Raises ``ValueError`` with a short reason for files that are not images, truncated,
    empty, or larger than ``max_pixels`` (a decompression-bomb guard checked before decoding).
    Grayscale, 16-bit, CMYK, palette and alpha images become RGB; EXIF rotation is applied.
    """
    if isinstance(value, Image.Image):
        im = value
    elif isinstance(value, np.ndarray):
        im = Image.fromarray(value)
    else:
        data = path = None
        if isinstance(value, dict):
            data, path = value.get("bytes"), value.get("path")
        elif isinstance(value, (bytes, bytearray)):
            data = bytes(value)
        elif isinstance(value, (str, os.PathLike)):
            path = str(value)
        if data is None:
            if path is None:
                raise ValueError("no image (empty cell)")
            try:
                data = Path(path).read_bytes()
            except OSError as err:
                raise ValueError(f"cannot read {path}: {err.strerror or err}") from err
        if len(data) == 0:
            raise ValueError("zero-byte image file")
        try:
            im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as err:
            raise ValueError(f"image exceeds the {max_pixels:,}-pixel limit (decompression-bomb guard)") from err
        except Exception as err:
            detail = str(err).splitlines()[0][:80] if str(err) else ""
            if isinstance(err, UnidentifiedImageError):
                detail = "unknown file format"
            raise ValueError(f"not a readable image ({type(err).__name__}{': ' + detail if detail else ''})") from err
    w, h = im.size
    if w * h > max_pixels:
        raise ValueError(f"image of {w}x{h} exceeds the {max_pixels:,}-pixel limit (decompression-bomb guard)")
    if w < 1 or h < 1:
        raise ValueError("image has no pixels")
    if draft_size and im.format == "JPEG":
        im.draft("RGB", (draft_size, draft_size))  # decode big JPEGs at reduced scale: faster, same crop
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            ImageFile.LOAD_TRUNCATED_IMAGES = False
            im.load()
            im = ImageOps.exif_transpose(im)
    except Exception as err:
        raise ValueError(f"corrupt or truncated image ({type(err).__name__}: {str(err)[:80]})") from err
    return to_rgb(im)


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; 16-bit and float images are rescaled, alpha composited on white."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        im = Image.fromarray(arr.round().astype(np.uint8), mode="L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


@dataclass
class PixelSet:
    """Decoded, resized and centre-cropped images of one split as uint8 (N, 3, H, W).

    ``valid[i]`` is False where row i could not be decoded; its pixels are zeros and
    ``bad_rows`` holds (row, reason) for the report.
    """

    pixels: torch.Tensor
    valid: torch.Tensor
    bad_rows: list[tuple[int, str]] = field(default_factory=list)

    @property
    def n_bad(self) -> int:
        return len(self.bad_rows)


def _image_size(image_processor) -> tuple[int, int]:
    crop = getattr(image_processor, "crop_size", None)
    if getattr(image_processor, "do_center_crop", False) and crop:
        return int(crop["height"]), int(crop["width"])
    size = image_processor.size
    if "height" in size:
        return int(size["height"]), int(size["width"])
    edge = int(size["shortest_edge"])
    return edge, edge


def preprocess_uint8(images: Sequence[Image.Image], image_processor) -> np.ndarray:
    """Resize + centre-crop with the model's own image processor, without rescale/normalise.

    RGB images under a PIL-backend processor that resizes the shortest edge and centre-crops
    (CLIP's) take :func:`_resize_crop_pil`: the same PIL resize and crop window without the
    processor's per-image array round trips, bit-identical (tested) and 2.6x to 6x faster.
    Anything else (the torchvision backend, other size rules, images smaller than the crop)
    goes through the processor itself.
    """
    plan = _pil_resize_crop_plan(image_processor)
    if plan is not None and all(im.mode == "RGB" for im in images):
        out = [_resize_crop_pil(im, *plan) for im in images]
        if all(o is not None for o in out):
            return np.stack(out) if out else np.zeros((0, 3, plan[1], plan[2]), dtype=np.uint8)
    out = image_processor(
        images=list(images), do_rescale=False, do_normalize=False, return_tensors="np"
    )["pixel_values"]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _pil_resize_crop_plan(image_processor) -> tuple[int, int, int, int] | None:
    """(shortest edge, crop height, crop width, PIL resample) when the fast path reproduces the processor."""
    try:
        from transformers.image_processing_backends import PilBackend
    except ImportError:
        return None
    if not isinstance(image_processor, PilBackend):
        return None
    size = image_processor.size  # a SizeDict or a dict: both have .get
    short = size.get("shortest_edge")
    other_rules = [size.get(k) for k in ("height", "width", "longest_edge", "max_height", "max_width")]
    if not (image_processor.do_resize and image_processor.do_center_crop and short) or any(other_rules):
        return None
    if getattr(image_processor, "do_pad", False) or getattr(image_processor, "default_to_square", False):
        return None
    if not image_processor.crop_size or image_processor.resample is None:
        return None
    ch, cw = _image_size(image_processor)
    return int(short), ch, cw, int(image_processor.resample)


def _resize_crop_pil(im: Image.Image, short: int, ch: int, cw: int, resample: int) -> np.ndarray | None:
    """CHW uint8: shortest edge to ``short`` (long edge truncated as transformers does), centre crop."""
    w, h = im.size
    long_edge = int(short * max(w, h) / min(w, h))
    nw, nh = (short, long_edge) if w <= h else (long_edge, short)
    if nh < ch or nw < cw:
        return None  # the processor pads here; let it
    arr = np.asarray(im.resize((nw, nh), resample=resample)).transpose(2, 0, 1)
    top, left = (nh - ch) // 2, (nw - cw) // 2
    return np.ascontiguousarray(arr[:, top : top + ch, left : left + cw])


def normalize_pixels(pixels_u8: torch.Tensor, image_processor) -> torch.Tensor:
    """Rescale and normalise uint8 pixels exactly as the image processor would."""
    x = pixels_u8.float()
    if getattr(image_processor, "do_rescale", True):
        x = x * float(image_processor.rescale_factor)
    if getattr(image_processor, "do_normalize", True):
        mean = torch.tensor(image_processor.image_mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(image_processor.image_std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        x = (x - mean) / std
    return x


def _decode_chunk(values: Sequence, image_processor, hw: tuple[int, int]):
    images, bad = [], []
    for j, v in enumerate(values):
        try:
            images.append(decode_image(v, draft_size=2 * max(hw)))
        except ValueError as err:
            images.append(None)
            bad.append((j, str(err)))
    good = [im for im in images if im is not None]
    arr = np.zeros((len(values), 3, *hw), dtype=np.uint8)
    if good:
        processed = preprocess_uint8(good, image_processor)
        k = 0
        for j, im in enumerate(images):
            if im is not None:
                arr[j] = processed[k]
                k += 1
    return arr, bad


def pixels_for(
    dataset,
    image_processor,
    *,
    cache_dir: str | os.PathLike | None = None,
    num_threads: int = 4,
    chunk_size: int = 64,
    progress: bool = True,
    desc: str = "decoding images",
) -> PixelSet:
    """Decode every image of ``dataset`` once into uint8 pixels at the model's input size.

    With ``cache_dir`` the pixels go to a memory-mapped ``.npy`` file keyed by the data
    fingerprint and the processor's size, so later runs (and the audit) skip decoding and
    large splits need not fit in memory. Undecodable images are skipped and counted.
    """
    hw = _image_size(image_processor)
    n = len(dataset)
    key = f"{dataset_fingerprint(dataset)}-{hw[0]}x{hw[1]}-{pixel_settings_key(image_processor)}"
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        npy, meta = cache_dir / f"pixels-{key}.npy", cache_dir / f"pixels-{key}.json"
        if npy.exists() and meta.exists():
            info = json.loads(meta.read_text())
            arr = np.load(npy, mmap_mode="r")
            valid = torch.ones(n, dtype=torch.bool)
            bad = [(int(r), str(why)) for r, why in info["bad_rows"]]
            for r, _ in bad:
                valid[r] = False
            return PixelSet(_as_tensor(arr), valid, bad)
    images = dataset.select_columns(["image"])
    starts = list(range(0, n, chunk_size))
    bad_rows: list[tuple[int, str]] = []

    def work(start: int):
        values = images[start : start + chunk_size]["image"]
        return start, _decode_chunk(values, image_processor, hw)

    def fill(out: np.ndarray) -> None:
        bar = tqdm(total=n, desc=desc, unit="img", disable=not progress)
        with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
            for start, (arr, bad) in pool.map(work, starts):
                out[start : start + len(arr)] = arr
                bad_rows.extend((start + j, why) for j, why in bad)
                bar.update(len(arr))
        bar.close()

    if cache_dir is None:
        out = np.zeros((n, 3, *hw), dtype=np.uint8)
        fill(out)
    else:
        # Stream into a memory-mapped file: a split larger than RAM is decoded chunk by chunk.
        with atomic_path(npy) as tmp:
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 3, *hw))
            fill(mm)
            mm.flush()
            del mm
        atomic_write_json(meta, {"bad_rows": bad_rows, "n": n, "size": list(hw)})
        out = np.load(npy, mmap_mode="r")
    valid = torch.ones(n, dtype=torch.bool)
    for r, _ in bad_rows:
        valid[r] = False
    return PixelSet(_as_tensor(out), valid, bad_rows)


def _as_tensor(arr: np.ndarray) -> torch.Tensor:
    """A tensor over ``arr`` without copying; read-only memmaps are viewed, never written."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch warns that the memmap is not writable
        return torch.from_numpy(arr)


def pixel_settings_key(image_processor) -> str:
    """Hash of the settings that decide the decoded uint8 pixels (size and crop, not normalisation)."""
    d = image_processor.to_dict()
    parts = {k: d.get(k) for k in ("size", "crop_size", "do_center_crop", "resample", "do_resize")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8]


"""Occlusion heat maps: how much each region of an image supports its similarity to a prompt.

Method (Zeiler and Fergus 2014, occlusion sensitivity, applied to CLIP's image-text
similarity): the image is cut into a grid of cells (by default one cell per ViT patch);
for each cell a copy of the image has that cell replaced by the image processor's mean
colour, which is exactly 0 after normalisation, i.e. "no information" for the model. The
original and every masked copy are encoded in one batch, and a cell's value is

    cos(image, prompt) - cos(image with the cell masked, prompt)

so a positive cell is one the match depends on, a negative one counts against the prompt.
Deterministic (no sampling, no gradients), model-agnostic and free of extra dependencies;
its cost is one forward pass per cell. Maps are cached on disk, keyed by model fingerprint,
data fingerprint, image row, prompt, grid and method version.
"""

from __future__ import annotations

import hashlib
import json
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from workbench.data import normalize_pixels
from workbench.io import atomic_path
from workbench.live.session import LiveAudit, LiveError

METHOD_VERSION = 1  # part of the cache key: a change to the method never reads an old map
HEATMAP_METHOD = ("occlusion: each grid cell in turn set to the processor's mean colour; "
                  "value = cos(image, prompt) - cos(masked image, prompt)")


def patch_grid(model) -> tuple[int, int]:
    """(rows, columns) of the vision tower's patch grid: one heat-map cell per ViT patch."""
    cfg = model.config.vision_config
    side = int(cfg.image_size) // int(cfg.patch_size)
    return side, side


def cell_bounds(size: int, cells: int) -> list[tuple[int, int]]:
    """[start, stop) pixel ranges of ``cells`` near-equal cells covering ``size`` pixels.

    >>> cell_bounds(10, 3)
    [(0, 3), (3, 7), (7, 10)]
    """
    if not 1 <= cells <= size:
        raise ValueError(f"grid of {cells} cells does not fit {size} pixels; choose 1 to {size} cells")
    edges = [round(i * size / cells) for i in range(cells + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _grid_of(model, grid: int | tuple[int, int] | None) -> tuple[int, int]:
    if grid is None:
        return patch_grid(model)
    if isinstance(grid, int):
        return grid, grid
    return int(grid[0]), int(grid[1])


def _mean_colour(image_processor, channels: int) -> torch.Tensor:
    """The processor's mean colour in the model's input units: 0 after normalisation."""
    if getattr(image_processor, "do_normalize", True):
        return torch.zeros(channels)
    mean = torch.tensor(image_processor.image_mean, dtype=torch.float32)
    if getattr(image_processor, "do_rescale", True):
        return mean  # the mean is stated in rescaled units
    return mean / float(image_processor.rescale_factor)


@torch.inference_mode()
def occlusion_maps(
    model,
    image_processor,
    pixels_u8: torch.Tensor,
    text_embedding: np.ndarray | torch.Tensor,
    *,
    grid: int | tuple[int, int] | None = None,
) -> np.ndarray:
    """(N, rows, columns) occlusion maps of uint8 images (N, 3, H, W) for one prompt embedding (D,).

    Each image and its masked copies (one per cell) are encoded in one batch.
    """
    if pixels_u8.ndim != 4:
        raise ValueError(f"pixels must be (N, 3, H, W) uint8, got shape {tuple(pixels_u8.shape)}")
    rows, cols = _grid_of(model, grid)
    _, channels, height, width = pixels_u8.shape
    row_bounds, col_bounds = cell_bounds(height, rows), cell_bounds(width, cols)
    param = next(model.parameters())
    text = F.normalize(torch.as_tensor(np.asarray(text_embedding), dtype=torch.float32).reshape(-1), dim=0)
    fill = _mean_colour(image_processor, channels).view(channels, 1, 1)
    maps = np.zeros((len(pixels_u8), rows, cols), dtype=np.float32)
    for i in range(len(pixels_u8)):
        image = normalize_pixels(pixels_u8[i : i + 1], image_processor)[0]
        batch = image.unsqueeze(0).repeat(1 + rows * cols, 1, 1, 1)
        for r, (top, bottom) in enumerate(row_bounds):
            for c, (left, right) in enumerate(col_bounds):
                batch[1 + r * cols + c, :, top:bottom, left:right] = fill
        feats = model.get_image_features(pixel_values=batch.to(param.device, param.dtype)).pooler_output
        sims = F.normalize(feats.float().cpu(), dim=-1) @ text
        maps[i] = (sims[0] - sims[1:]).reshape(rows, cols).numpy()
    return maps


class HeatmapCache:
    """Heat maps on disk as ``.npy`` files, one per (model, data, row, prompt, grid, method); written atomically."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @staticmethod
    def key(model_fingerprint: str, data_fingerprint: str, row: int, prompt: str, grid: tuple[int, int]) -> dict:
        return {"model": model_fingerprint, "data": data_fingerprint, "row": int(row), "prompt": prompt,
                "grid": [int(grid[0]), int(grid[1])], "method": METHOD_VERSION}

    def path(self, key: dict) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        return self.root / f"heat-{key['model']}-{digest}.npy"

    def get(self, key: dict) -> np.ndarray | None:
        path = self.path(key)
        if not path.is_file():
            return None
        return np.load(path, allow_pickle=False)

    def put(self, key: dict, heatmap: np.ndarray) -> None:
        with atomic_path(self.path(key)) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.asarray(heatmap, dtype=np.float32), allow_pickle=False)


def heatmaps_for_rows(live: LiveAudit, role: str, rows: Sequence[int], prompt: str, *,
                      grid: int | tuple[int, int] | None = None, cache: HeatmapCache | None = None) -> np.ndarray:
    """(len(rows), r, c) maps of source rows ``rows`` for ``role`` and ``prompt``; cached maps are read, not recomputed."""
    if role not in live.models:
        raise LiveError(f"no model {role!r} in this audit; roles: {', '.join(live.roles)}")
    prompt = prompt.strip()
    if not prompt:
        raise LiveError("the prompt is empty; type the text whose heat map to draw")
    m = live.models[role]
    cells = _grid_of(m.model, grid)
    cache = cache if cache is not None else HeatmapCache(live.cache_dir / "heatmaps")
    keys = [cache.key(m.fingerprint, live.data_fingerprint, r, prompt, cells) for r in rows]
    found = [cache.get(k) for k in keys]
    todo = [i for i, f in enumerate(found) if f is None]
    if todo:
        pixels = live.pixels(role, [int(rows[i]) for i in todo])
        computed = occlusion_maps(m.model, m.processor.image_processor, pixels, live.prompt_embedding(role, prompt),
                                  grid=cells)
        for i, heat in zip(todo, computed):
            cache.put(keys[i], heat)
            found[i] = heat
    if not found:
        return np.zeros((0, *cells), dtype=np.float32)
    return np.stack(found)


def heatmap_for_row(live: LiveAudit, role: str, row: int, prompt: str, *,
                    grid: int | tuple[int, int] | None = None, cache: HeatmapCache | None = None) -> np.ndarray:
    """(r, c) map of one source row; see :func:`heatmaps_for_rows`."""
    return heatmaps_for_rows(live, role, [row], prompt, grid=grid, cache=cache)[0]


def sample_group_rows(live: LiveAudit, attribute: str, per_group: int, *, seed: int = 0) -> dict[str, list[int]]:
    """Up to ``per_group`` source rows of every group of ``attribute``, drawn without replacement (seeded).

    The same rows serve every model, so base and fine-tuned means are over the same images.
    """
    if per_group < 1:
        raise ValueError(f"per_group must be at least 1, got {per_group}")
    labels = live.group_labels(attribute)
    source_rows = live.table["row"].to_numpy()
    rng = np.random.default_rng(seed)
    out = {}
    for group in sorted(set(labels)):
        members = source_rows[labels == group]
        chosen = rng.choice(members, size=min(per_group, len(members)), replace=False)
        out[group] = sorted(int(r) for r in chosen)
    return out


def group_mean_maps(live: LiveAudit, role: str, prompt: str, attribute: str, *, per_group: int = 8,
                    grid: int | tuple[int, int] | None = None, seed: int = 0,
                    cache: HeatmapCache | None = None) -> dict[str, tuple[np.ndarray, list[int]]]:
    """group -> (mean map over its sampled images, the rows averaged); see :func:`sample_group_rows`."""
    out = {}
    for group, rows in sample_group_rows(live, attribute, per_group, seed=seed).items():
        maps = heatmaps_for_rows(live, role, rows, prompt, grid=grid, cache=cache)
        out[group] = (maps.mean(axis=0), rows)
    return out


def _colour_cells(heat: np.ndarray, vmax: float) -> np.ndarray:
    """(r, c, 4) uint8 RGBA per cell: red where the cell supports the prompt, blue where it counts against it."""
    scaled = np.clip(heat / vmax, -1.0, 1.0) if vmax > 0 else np.zeros_like(heat)
    rgba = np.zeros((*heat.shape, 4), dtype=np.uint8)
    rgba[..., 0] = np.where(scaled > 0, 230, 40)
    rgba[..., 1] = 40
    rgba[..., 2] = np.where(scaled > 0, 40, 230)
    rgba[..., 3] = np.round(200 * np.abs(scaled)).astype(np.uint8)
    return rgba


def render_heatmap(image_u8: np.ndarray, heat: np.ndarray, *, vmax: float | None = None, title: str = "",
                   scale: int = 4) -> Image.Image:
    """The image (H, W, 3 uint8) with ``heat`` drawn over it cell by cell, the peak cell outlined, and the
    method written under it. ``vmax``: the value drawn at full colour (share it between pictures to compare them)."""
    height, width = image_u8.shape[:2]
    rows, cols = heat.shape
    vmax = float(np.abs(heat).max()) if vmax is None else float(vmax)
    size = (width * scale, height * scale)
    base = Image.fromarray(np.ascontiguousarray(image_u8)).convert("RGBA").resize(size, Image.Resampling.NEAREST)
    overlay = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    colours = _colour_cells(heat, vmax)
    row_bounds, col_bounds = cell_bounds(height, rows), cell_bounds(width, cols)
    for r, (top, bottom) in enumerate(row_bounds):
        for c, (left, right) in enumerate(col_bounds):
            draw.rectangle([left * scale, top * scale, right * scale - 1, bottom * scale - 1],
                           fill=tuple(int(x) for x in colours[r, c]))
    peak_r, peak_c = np.unravel_index(int(np.argmax(heat)), heat.shape)
    (top, bottom), (left, right) = row_bounds[peak_r], col_bounds[peak_c]
    draw.rectangle([left * scale, top * scale, right * scale - 1, bottom * scale - 1], outline=(255, 255, 0, 255),
                   width=2)
    picture = Image.alpha_composite(base, overlay).convert("RGB")
    lines = [title] if title else []
    lines += [f"occlusion, {rows}x{cols} grid, cells set to the mean colour",
              f"red: supports the prompt; blue: against; full colour = {vmax:.4f}; yellow box: peak"]
    # The default bitmap font is about 6 px a character; wrap so the method stays readable on small images.
    lines = [part for line in lines for part in textwrap.wrap(line, max(20, size[0] // 6))]
    strip_height = 14 * len(lines) + 6
    out = Image.new("RGB", (size[0], size[1] + strip_height), (255, 255, 255))
    out.paste(picture, (0, 0))
    text = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        text.text((3, size[1] + 3 + 14 * i), line, fill=(0, 0, 0))
    return out

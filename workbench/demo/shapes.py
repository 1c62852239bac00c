"""Generic synthetic pretraining corpus: coloured shapes with compositional captions.

It teaches the tiny base CLIP words for colour, size, shape, edge, texture and position,
and shares no lesion vocabulary with the dermatology domain (tested), so whatever the base
knows about lesions it can only reach through those generic words.
"""

from __future__ import annotations

import math

import numpy as np

from workbench.demo.derm import IMAGE_SIZE, _radial_mask, _smooth_noise

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 40),
    "pink": (230, 160, 170),
    "orange": (235, 140, 40),
    "yellow": (235, 215, 60),
    "green": (60, 160, 70),
    "blue": (60, 90, 200),
    "purple": (130, 70, 170),
    "brown": (120, 76, 48),
    "tan": (190, 145, 95),
    "black": (25, 20, 20),
    "white": (245, 242, 238),
    "grey": (128, 128, 128),
    "beige": (225, 200, 170),
}
SHAPES: tuple[str, ...] = ("circle", "oval", "square", "triangle", "ring", "blob", "star")
SIZES: dict[str, tuple[float, float]] = {"small": (5.0, 8.0), "large": (13.0, 19.0)}
TEXTURES: tuple[str, ...] = ("plain", "spotted", "striped")
POSITIONS: dict[str, tuple[float, float]] = {
    "in the centre": (32, 32),
    "on the left": (32, 18),
    "on the right": (32, 46),
    "at the top": (18, 32),
    "at the bottom": (46, 32),
}


def _shape_field(rng: np.random.Generator, shape: str, cy: float, cx: float, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float64)
    angle = rng.uniform(0, math.pi)
    if shape in ("circle", "ring"):
        field, _ = _radial_mask(yy, xx, cy, cx, radius, 1.0, 0.0, [])
    elif shape == "oval":
        field, _ = _radial_mask(yy, xx, cy, cx, radius, rng.uniform(1.4, 1.8), angle, [])
    elif shape == "blob":
        harm = [(k, rng.uniform(0.1, 0.22), rng.uniform(0, 6.3)) for k in (2, 3, 5)]
        field, _ = _radial_mask(yy, xx, cy, cx, radius, 1.0, angle, harm)
    elif shape == "star":
        field, _ = _radial_mask(yy, xx, cy, cx, radius, 1.0, angle, [(5, 0.35, 0.0)])
    elif shape == "square":
        ca, sa = math.cos(angle), math.sin(angle)
        u, v = (xx - cx) * ca + (yy - cy) * sa, -(xx - cx) * sa + (yy - cy) * ca
        field = np.maximum(np.abs(u), np.abs(v)) / (radius * 0.85)
    elif shape == "triangle":
        d = []
        for k in range(3):
            a = angle + k * 2 * math.pi / 3
            d.append((xx - cx) * math.cos(a) + (yy - cy) * math.sin(a))
        field = np.max(np.stack(d), axis=0) / (radius * 0.5)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    if shape == "ring":
        field = np.where(field < 0.65, 2.0, field)
    return field


def render_shape_image(rng: np.random.Generator, spec: dict) -> np.ndarray:
    bg = np.array(COLOURS[spec["background"]], dtype=np.float64)
    img = np.broadcast_to(bg, (IMAGE_SIZE, IMAGE_SIZE, 3)).copy()
    img *= 1.0 + 0.05 * _smooth_noise(rng, IMAGE_SIZE, 3)[..., None]
    cy, cx = POSITIONS[spec["position"]]
    cy, cx = cy + rng.uniform(-3, 3), cx + rng.uniform(-3, 3)
    radius = rng.uniform(*SIZES[spec["size"]])
    field = _shape_field(rng, spec["shape"], cy, cx, radius)
    edge = 3.0 if spec["edge"] == "ragged" else 8.0
    inside = field < 1.0
    if spec["edge"] == "ragged":
        inside = field + 0.18 * rng.uniform(-1, 1, field.shape) < 1.0
    colour = np.array(COLOURS[spec["colour"]], dtype=np.float64)
    obj = np.broadcast_to(colour, img.shape).copy()
    second = np.array(COLOURS[spec["second_colour"]], dtype=np.float64)
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
    if spec["texture"] == "spotted":
        spots = rng.uniform(size=(IMAGE_SIZE, IMAGE_SIZE)) > 0.8
        obj[spots] = second
    elif spec["texture"] == "striped":
        obj[((xx + yy) // 3) % 3 == 0] = second
    mask = np.clip((1.0 - field) * edge, 0, 1) if spec["edge"] == "smooth" else inside.astype(np.float64)
    img = img * (1 - mask[..., None]) + obj * mask[..., None]
    img += rng.normal(0, 5.0, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def describe(spec: dict, rng: np.random.Generator) -> str:
    """Compositional caption; word order varies so the text tower learns words, not slots."""
    noun = spec["shape"]
    tex = "" if spec["texture"] == "plain" else f" {spec['texture']} with {spec['second_colour']}"
    forms = (
        f"a {spec['size']} {spec['colour']} {noun}{tex} with a {spec['edge']} edge {spec['position']} on a {spec['background']} background",
        f"a {spec['colour']} {noun}, {spec['size']}, {spec['edge']} edge{',' + tex if tex else ''}, on {spec['background']}",
        f"{spec['position']}, a {spec['size']} {spec['colour']} {noun}{tex} on a {spec['background']} background",
        f"a {spec['size']} {noun} in {spec['colour']} with a {spec['edge']} edge",
        f"a {spec['colour']} {noun}{tex} on {spec['background']}",
    )
    return forms[int(rng.integers(len(forms)))]


def random_shape_spec(rng: np.random.Generator) -> dict:
    """One random scene: object colour, shape, size, texture, edge and position on a background."""
    colour, background, second = rng.choice(list(COLOURS), 3, replace=False)
    return {
        "shape": SHAPES[int(rng.integers(len(SHAPES)))],
        "colour": str(colour),
        "background": str(background),
        "second_colour": str(second),
        "size": ("small", "large")[int(rng.integers(2))],
        "texture": TEXTURES[int(rng.integers(len(TEXTURES)))],
        "edge": ("smooth", "ragged")[int(rng.integers(2))],
        "position": list(POSITIONS)[int(rng.integers(len(POSITIONS)))],
    }


def generate_shapes_rows(n: int, seed: int, label_by: str = "shape") -> dict[str, list]:
    """``n`` rows: uint8 images, captions, ``shape`` and ``colour`` columns, ``label`` = one of them."""
    if label_by not in ("shape", "colour"):
        raise ValueError(f"label_by must be 'shape' or 'colour', not {label_by!r}")
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {"image": [], "caption": [], "label": [], "shape": [], "colour": []}
    for _ in range(n):
        spec = random_shape_spec(rng)
        cols["image"].append(render_shape_image(rng, spec))
        cols["caption"].append(describe(spec, rng))
        cols["label"].append(spec[label_by])
        cols["shape"].append(spec["shape"])
        cols["colour"].append(spec["colour"])
    return cols


def generate_shapes(sizes: dict[str, int] | None = None, seed: int = 0, label_by: str = "shape"):
    """The generic corpus as a ``datasets.DatasetDict``; each split draws from its own seed."""
    import datasets
    from PIL import Image

    sizes = dict(sizes or {"train": 2000, "validation": 300, "test": 600})
    features = datasets.Features(
        {"image": datasets.Image(), **{k: datasets.Value("string") for k in ("caption", "label", "shape", "colour")}}
    )
    out = {}
    for offset, (split, n) in enumerate(sizes.items()):
        cols = generate_shapes_rows(n, seed * 1000 + offset, label_by)
        cols["image"] = [Image.fromarray(a) for a in cols["image"]]
        out[split] = datasets.Dataset.from_dict(cols, features=features)
    return datasets.DatasetDict(out)

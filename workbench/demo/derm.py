"""Synthetic dermatology-like domain: skin patches with a lesion, captions and demographics.

Everything is drawn from one seed, so the same arguments give the same rows bit for bit.
Each image is 64x64 RGB: a skin background whose colour follows a Fitzpatrick-like type,
an optional hair cue (the visible cue for ``sex``), and one lesion whose shape, border,
colour and texture depend on the class. Bias can be planted with a known size through
:class:`DermBias` (class prevalence per group, lesion contrast per skin tone, caption
wording per group).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from workbench.prompts import fill_template

IMAGE_SIZE = 64
CLASSES: tuple[str, ...] = ("melanoma", "nevus", "basal cell carcinoma", "seborrheic keratosis")
SKIN_TONES: tuple[str, ...] = ("light", "medium", "dark")
SEXES: tuple[str, ...] = ("female", "male")
GROUP_COLUMNS: tuple[str, ...] = ("skin_tone", "sex")

# Fitzpatrick types I-VI as RGB skin colours, grouped into three skin-tone groups.
FITZPATRICK_RGB: dict[int, tuple[int, int, int]] = {
    1: (246, 218, 200),
    2: (234, 192, 163),
    3: (212, 163, 124),
    4: (176, 124, 88),
    5: (124, 84, 58),
    6: (82, 56, 40),
}
FITZPATRICK_OF_TONE: dict[str, tuple[int, int]] = {"light": (1, 2), "medium": (3, 4), "dark": (5, 6)}

# Lower lesion contrast on darker skin is what clinical photo sets show; it is the default.
REALISTIC_CONTRAST: dict[str, float] = {"light": 1.0, "medium": 0.9, "dark": 0.75}
NO_CONTRAST_BIAS: dict[str, float] = {"light": 1.0, "medium": 1.0, "dark": 1.0}

CLASS_PHRASES: dict[str, tuple[str, ...]] = {
    "melanoma": ("melanoma", "a melanoma", "malignant melanoma", "an asymmetric melanoma"),
    "nevus": ("nevus", "a nevus", "a benign nevus", "a common melanocytic nevus"),
    "basal cell carcinoma": (
        "basal cell carcinoma",
        "a basal cell carcinoma",
        "a nodular basal cell carcinoma",
        "a pearly basal cell carcinoma",
    ),
    "seborrheic keratosis": (
        "seborrheic keratosis",
        "a seborrheic keratosis",
        "a stuck-on seborrheic keratosis",
        "a waxy seborrheic keratosis",
    ),
}
CAPTION_TEMPLATES: tuple[str, ...] = (
    "dermoscopy image of {}",
    "clinical photo of {} on the skin",
    "close-up of {}",
    "skin lesion diagnosed as {}",
    "{}, dermatology photo",
)


@dataclass(frozen=True)
class DermBias:
    """Knobs that plant bias of a known size. The defaults plant none except realistic contrast.

    prevalence: skin tone -> class -> relative weight; tones not listed draw classes uniformly.
    contrast: skin tone -> lesion contrast in [0, 1] (1 = full lesion colour, 0 = invisible).
    caption_terms: group value (of any group column) -> word added to captions of those images.
    caption_term_rate: share of that group's captions that carry the word.
    skin_tone_shares / sex_shares: how the groups are sampled (equal by default).
    """

    prevalence: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    contrast: Mapping[str, float] = field(default_factory=lambda: dict(REALISTIC_CONTRAST))
    caption_terms: Mapping[str, str] = field(default_factory=dict)
    caption_term_rate: float = 1.0
    skin_tone_shares: Sequence[float] = (1 / 3, 1 / 3, 1 / 3)
    sex_shares: Sequence[float] = (0.5, 0.5)

    def validate(self) -> None:
        for tone, weights in self.prevalence.items():
            if tone not in SKIN_TONES:
                raise ValueError(f"DermBias.prevalence: unknown skin tone {tone!r}; use one of {SKIN_TONES}")
            unknown = set(weights) - set(CLASSES)
            if unknown:
                raise ValueError(f"DermBias.prevalence[{tone!r}]: unknown classes {sorted(unknown)}; use {CLASSES}")
        for tone, c in self.contrast.items():
            if tone not in SKIN_TONES or not 0.0 <= c <= 1.0:
                raise ValueError(f"DermBias.contrast: {tone!r}={c} must name a skin tone and lie in [0, 1]")
        known_groups = set(SKIN_TONES) | set(SEXES)
        unknown = set(self.caption_terms) - known_groups
        if unknown:
            raise ValueError(f"DermBias.caption_terms: unknown groups {sorted(unknown)}; use {sorted(known_groups)}")


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid upsampled bilinearly."""
    grid = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1))
    xs = np.linspace(0, cells, size)
    i0 = np.minimum(xs.astype(int), cells - 1)
    t = xs - i0
    rows = grid[i0] * (1 - t)[:, None] + grid[i0 + 1] * t[:, None]
    return rows[:, i0] * (1 - t)[None, :] + rows[:, i0 + 1] * t[None, :]


def _radial_mask(
    yy: np.ndarray,
    xx: np.ndarray,
    cy: float,
    cx: float,
    radius: float,
    aspect: float,
    angle: float,
    harmonics: Sequence[tuple[int, float, float]],
) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance-like field of a star-shaped blob: < 1 inside. Also returns the polar angle."""
    dy, dx = yy - cy, xx - cx
    ca, sa = math.cos(angle), math.sin(angle)
    u = (dx * ca + dy * sa) / aspect
    v = -dx * sa + dy * ca
    theta = np.arctan2(v, u)
    r = np.sqrt(u * u + v * v)
    boundary = np.full_like(theta, radius)
    for k, amp, phase in harmonics:
        boundary = boundary + radius * amp * np.sin(k * theta + phase)
    return r / np.maximum(boundary, 1e-3), theta


def render_lesion_image(
    rng: np.random.Generator, label: str, fitzpatrick: int, sex: str, contrast: float
) -> np.ndarray:
    """Draw one 64x64 RGB uint8 image of a lesion of class ``label`` on the given skin."""
    s = IMAGE_SIZE
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    skin = np.array(FITZPATRICK_RGB[fitzpatrick], dtype=np.float64)
    skin = skin * rng.uniform(0.94, 1.06) + rng.normal(0, 4, 3)
    img = np.broadcast_to(skin, (s, s, 3)).copy()
    img *= 1.0 + 0.06 * _smooth_noise(rng, s, 3)[..., None]  # uneven lighting

    cy, cx = rng.uniform(26, 38, 2)
    angle = rng.uniform(0, math.pi)
    lesion = np.zeros((s, s, 3))
    if label == "melanoma":
        # Large, asymmetric, ragged border, several colours (brown, black, blue-grey).
        radius = rng.uniform(13, 19)
        harm = [(k, rng.uniform(0.08, 0.2), rng.uniform(0, 6.3)) for k in (2, 3, 5)]
        harm.append((13, rng.uniform(0.04, 0.08), rng.uniform(0, 6.3)))
        field_, _ = _radial_mask(yy, xx, cy, cx, radius, rng.uniform(1.0, 1.4), angle, harm)
        mix = _smooth_noise(rng, s, 5)
        dark = np.array([55, 32, 24.0])
        black = np.array([25, 18, 20.0])
        blue = np.array([80, 88, 112.0])
        lesion = np.where((mix > 0.25)[..., None], black, dark)
        lesion = np.where((mix < -0.45)[..., None], blue, lesion)
        mask = np.clip((1.0 - field_) * 6.0, 0, 1)
    elif label == "nevus":
        # Small, round, smooth border, one even brown.
        radius = rng.uniform(6, 9)
        harm = [(2, rng.uniform(0.0, 0.04), rng.uniform(0, 6.3))]
        field_, _ = _radial_mask(yy, xx, cy, cx, radius, rng.uniform(1.0, 1.15), angle, harm)
        lesion = np.broadcast_to(np.array([118, 74, 46.0]) * rng.uniform(0.9, 1.1), (s, s, 3)).copy()
        mask = np.clip((1.0 - field_) * 4.0, 0, 1)
    elif label == "basal cell carcinoma":
        # Pearly pink nodule, rolled whitish border, thin red vessels across it.
        radius = rng.uniform(10, 14)
        harm = [(3, rng.uniform(0.0, 0.06), rng.uniform(0, 6.3))]
        field_, theta = _radial_mask(yy, xx, cy, cx, radius, rng.uniform(1.0, 1.2), angle, harm)
        pink = np.array([226, 160, 168.0])
        pearl = np.array([250, 232, 230.0])
        lesion = np.broadcast_to(pink, (s, s, 3)).copy()
        rim = (field_ > 0.72) & (field_ < 1.0)
        lesion[rim] = pearl
        vessels = np.abs(np.sin(3.0 * theta + 4.0 * field_ + rng.uniform(0, 6.3))) < 0.12
        lesion[vessels & (field_ < 0.7)] = np.array([186, 48, 58.0])
        mask = np.clip((1.0 - field_) * 8.0, 0, 1)
    elif label == "seborrheic keratosis":
        # Stuck-on waxy oval, sharp border, rough speckled tan-brown surface.
        radius = rng.uniform(9, 13)
        harm = [(2, rng.uniform(0.0, 0.05), rng.uniform(0, 6.3))]
        field_, _ = _radial_mask(yy, xx, cy, cx, radius, rng.uniform(1.4, 1.8), angle, harm)
        tan = np.array([178, 134, 88.0]) * rng.uniform(0.9, 1.05)
        speckle = rng.uniform(-1, 1, (s, s))
        lesion = tan + 45.0 * np.sign(speckle)[..., None] * (np.abs(speckle) > 0.55)[..., None]
        mask = (field_ < 1.0).astype(np.float64)
    else:
        raise ValueError(f"unknown lesion class {label!r}; use one of {CLASSES}")

    alpha = contrast * mask[..., None]
    img = img * (1.0 - alpha) + lesion * alpha

    if sex == "male":
        # Visible cue for the second attribute: a few dark hairs crossing the patch.
        for _ in range(int(rng.integers(2, 5))):
            a = rng.uniform(0, math.pi)
            off = rng.uniform(-28, 28)
            dist = np.abs((xx - 32) * math.sin(a) - (yy - 32) * math.cos(a) - off)
            img[dist < 0.7] = np.array([40, 30, 25.0])

    img += rng.normal(0, 5.0, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _choice(rng: np.random.Generator, options: Sequence[str], weights: Sequence[float] | None = None) -> str:
    if weights is None:
        return options[int(rng.integers(len(options)))]
    w = np.asarray(weights, dtype=np.float64)
    return options[int(rng.choice(len(options), p=w / w.sum()))]


def make_caption(rng: np.random.Generator, label: str, groups: Mapping[str, str], bias: DermBias) -> str:
    caption = fill_template(_choice(rng, CAPTION_TEMPLATES), _choice(rng, CLASS_PHRASES[label]))
    for value in groups.values():
        term = bias.caption_terms.get(value)
        if term and rng.uniform() < bias.caption_term_rate:
            caption = f"{caption}, {term}"
    return caption


def generate_derm_rows(n: int, seed: int, bias: DermBias | None = None, split: str = "train") -> dict[str, list]:
    """Generate ``n`` rows as plain columns (``image`` holds uint8 HxWx3 arrays)."""
    bias = bias or DermBias()
    bias.validate()
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in ("id", "image", "caption", "label", "skin_tone", "sex", "fitzpatrick")}
    for i in range(n):
        tone = _choice(rng, SKIN_TONES, bias.skin_tone_shares)
        sex = _choice(rng, SEXES, bias.sex_shares)
        weights = bias.prevalence.get(tone)
        label = _choice(rng, CLASSES, [weights.get(c, 0.0) for c in CLASSES] if weights else None)
        fitz = int(rng.choice(FITZPATRICK_OF_TONE[tone]))
        contrast = float(bias.contrast.get(tone, 1.0))
        cols["image"].append(render_lesion_image(rng, label, fitz, sex, contrast))
        cols["caption"].append(make_caption(rng, label, {"skin_tone": tone, "sex": sex}, bias))
        cols["id"].append(f"derm-{split}-{i:06d}")
        cols["label"].append(label)
        cols["skin_tone"].append(tone)
        cols["sex"].append(sex)
        cols["fitzpatrick"].append(fitz)
    return cols


DEFAULT_SPLIT_SIZES: dict[str, int] = {"train": 3000, "validation": 600, "test": 1200}


def generate_derm(
    sizes: Mapping[str, int] | None = None, seed: int = 0, bias: DermBias | None = None
):
    """Build the demo domain as a ``datasets.DatasetDict`` in the canonical column shape.

    Each split gets its own seed derived from ``seed`` so split sizes can change
    without reshuffling the other splits.
    """
    import datasets
    from PIL import Image

    sizes = dict(sizes or DEFAULT_SPLIT_SIZES)
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "image": datasets.Image(),
            "caption": datasets.Value("string"),
            "label": datasets.Value("string"),
            "skin_tone": datasets.Value("string"),
            "sex": datasets.Value("string"),
            "fitzpatrick": datasets.Value("int32"),
        }
    )
    out = {}
    for offset, (split, n) in enumerate(sizes.items()):
        cols = generate_derm_rows(n, seed * 1000 + offset, bias, split)
        cols["image"] = [Image.fromarray(a) for a in cols["image"]]
        out[split] = datasets.Dataset.from_dict(cols, features=features)
    return datasets.DatasetDict(out)

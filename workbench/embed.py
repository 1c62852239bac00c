"""Batched encoding of images and prompts, zero-shot classification, and the embedding cache."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from workbench.data import column_values, normalize_pixels, pad_token_ids, pixels_for, tokenize_captions
from workbench.io import atomic_path
from workbench.prompts import ensemble, fill_templates

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of {}.",)


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _dtype_of(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


@torch.inference_mode()
def encode_images(
    model,
    pixels_u8: torch.Tensor,
    image_processor,
    *,
    batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """L2-normalised projected image embeddings (N, D), float32 on the CPU."""
    device, dtype = _device_of(model), _dtype_of(model)
    out = []
    for start in tqdm(range(0, len(pixels_u8), batch_size), desc="encoding images", disable=not progress):
        batch = normalize_pixels(pixels_u8[start : start + batch_size].to(device), image_processor).to(dtype)
        feats = model.get_image_features(pixel_values=batch).pooler_output
        out.append(F.normalize(feats.float(), dim=-1).cpu())
    if not out:
        return torch.zeros((0, model.config.projection_dim))
    return torch.cat(out)


def text_context_length(model) -> int:
    return int(model.config.text_config.max_position_embeddings)


@torch.inference_mode()
def _text_features(model, tokenizer, texts: Sequence[str], batch_size: int) -> torch.Tensor:
    """Projected text features (T, D), float32 on the CPU, not yet normalised."""
    device = _device_of(model)
    ids, _ = tokenize_captions(tokenizer, texts, text_context_length(model))
    out = []
    for start in range(0, len(ids), batch_size):
        input_ids, mask = pad_token_ids(ids[start : start + batch_size], tokenizer.pad_token_id)
        feats = model.get_text_features(input_ids=input_ids.to(device), attention_mask=mask.to(device)).pooler_output
        out.append(feats.float().cpu())
    if not out:
        return torch.zeros((0, model.config.projection_dim))
    return torch.cat(out)


@torch.inference_mode()
def encode_texts(model, tokenizer, texts: Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
    """L2-normalised projected text embeddings (T, D), float32 on the CPU."""
    return F.normalize(_text_features(model, tokenizer, texts, batch_size), dim=-1)


def class_embeddings(model, tokenizer, class_names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """Prompt-ensembled class embeddings (C, D): every template filled with the class name, then ensembled."""
    if not templates:
        raise ValueError("class_embeddings: no prompt templates given")
    return prompt_set_embeddings(model, tokenizer, [fill_templates(templates, c) for c in class_names])


def prompt_set_embeddings(model, tokenizer, prompts_per_class: Sequence[Sequence[str]], *, batch_size: int = 256) -> torch.Tensor:
    """One ensembled embedding per prompt list (C, D) (``workbench.prompts.ensemble``); lists may differ in length."""
    for i, prompts in enumerate(prompts_per_class):
        if not prompts:
            raise ValueError(f"prompt_set_embeddings: class {i} has no prompts")
    # Every prompt of every class in one pass through the text tower, split per class afterwards.
    features = _text_features(model, tokenizer, [p for prompts in prompts_per_class for p in prompts], batch_size)
    out, start = [], 0
    for prompts in prompts_per_class:
        out.append(ensemble(features[start : start + len(prompts)]))
        start += len(prompts)
    if not out:
        return torch.zeros((0, model.config.projection_dim))
    return torch.stack(out)


def zero_shot_predict(image_emb: torch.Tensor, class_emb: torch.Tensor, batch_size: int = 65536) -> torch.Tensor:
    """Index of the most similar class per image."""
    preds = [(image_emb[s : s + batch_size] @ class_emb.T).argmax(dim=1) for s in range(0, len(image_emb), batch_size)]
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


def label_indices(dataset, class_names: Sequence[str]) -> torch.Tensor:
    """Each row's label as its index in ``class_names``: the truth every zero-shot accuracy compares with."""
    index = {c: i for i, c in enumerate(class_names)}
    labels = column_values(dataset, "label")
    unknown = sorted({str(c) for c in labels if c not in index})
    if unknown:
        raise ValueError(f"labels not among the class names: {', '.join(unknown[:5])}; add them to the class names")
    return torch.tensor([index[c] for c in labels], dtype=torch.long)


def zero_shot_hits(
    model,
    processor,
    dataset,
    class_names: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    *,
    pixels=None,
    image_features: torch.Tensor | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """Per-row zero-shot correctness (bool, N); rows whose image did not decode are False.

    ``image_features`` (N, D, normalised), when given, are used instead of running the
    vision tower (a frozen image tower embeds its images once). Use with ``pixels.valid``
    to leave undecodable rows out of any rate.
    """
    pixelset = pixels if pixels is not None else pixels_for(dataset, processor.image_processor, progress=progress)
    if image_features is None:
        image_features = encode_images(model, pixelset.pixels, processor.image_processor, batch_size=batch_size, progress=progress)
    cls = class_embeddings(model, processor.tokenizer, class_names, templates)
    return (zero_shot_predict(image_features, cls) == label_indices(dataset, class_names)) & pixelset.valid


def zero_shot_accuracy(
    model,
    processor,
    dataset,
    class_names: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    *,
    pixels=None,
    image_features: torch.Tensor | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> float:
    """Top-1 zero-shot accuracy on ``dataset`` (canonical shape), over images that decode."""
    pixelset = pixels if pixels is not None else pixels_for(dataset, processor.image_processor, progress=progress)
    if int(pixelset.valid.sum()) == 0:
        raise ValueError("zero_shot_accuracy: no image in the split could be decoded")
    hits = zero_shot_hits(
        model, processor, dataset, class_names, templates, pixels=pixelset, image_features=image_features, batch_size=batch_size
    )
    return float(hits[pixelset.valid].float().mean())


def group_accuracy_gaps(hits: torch.Tensor, valid: torch.Tensor, dataset, group_columns: Sequence[str]) -> dict[str, float]:
    """Max minus min group accuracy per group column (decodable rows only)."""
    gaps = {}
    for col in group_columns:
        values = column_values(dataset, col)
        rates = []
        for g in sorted(set(values)):
            rows = torch.tensor([v == g for v in values]) & valid
            if int(rows.sum()):
                rates.append(float(hits[rows].float().mean()))
        if len(rates) >= 2:
            gaps[col] = max(rates) - min(rates)
    return gaps


class EmbeddingCache:
    """Image embeddings on disk, keyed by model fingerprint and data fingerprint.

    Files are safetensors written atomically, so a killed run never leaves a partial entry.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, model_key: str, data_key: str) -> Path:
        return self.root / f"img-{model_key}-{data_key}.safetensors"

    def get(self, model_key: str, data_key: str) -> torch.Tensor | None:
        from safetensors.torch import load_file

        p = self.path(model_key, data_key)
        if not p.exists():
            return None
        return load_file(str(p))["embeddings"]

    def put(self, model_key: str, data_key: str, embeddings: torch.Tensor) -> None:
        from safetensors.torch import save_file

        with atomic_path(self.path(model_key, data_key)) as tmp:
            save_file({"embeddings": embeddings.contiguous()}, str(tmp))

    def get_or_compute(self, model_key: str, data_key: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        cached = self.get(model_key, data_key)
        if cached is not None:
            return cached
        emb = compute()
        self.put(model_key, data_key, emb)
        return emb

"""Training pairs held in memory: decoded pixels (uint8) and token ids, batched on demand.

Images are decoded and resized once (``workbench.data.pixels_for``) and normalised per
batch; captions are tokenised once and padded per batch to the longest caption.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from workbench.data import DataError, column_values, normalize_pixels, pad_token_ids, pixels_for, tokenize_captions
from workbench.prompts import fill_template


@dataclass
class PairData:
    """Image-caption pairs of one split. Row ``i`` of ``pixels`` goes with ``token_ids[i]``."""

    pixels: torch.Tensor  # uint8 (N, 3, H, W)
    token_ids: list[list[int]]
    pad_id: int
    source_rows: torch.Tensor  # row index in the split (undecodable images dropped)
    truncated_captions: int = 0  # captions cut to the text context (end-of-text token kept)

    def __len__(self) -> int:
        return len(self.token_ids)

    def text_batch(self, rows: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        input_ids, mask = pad_token_ids([self.token_ids[int(r)] for r in rows], self.pad_id)
        return {"input_ids": _to_device(input_ids, device), "attention_mask": _to_device(mask, device)}

    def pixel_batch(self, rows: torch.Tensor, image_processor, device: torch.device) -> torch.Tensor:
        # uint8 crosses to the accelerator (a quarter of float32's bytes); normalising happens there.
        return normalize_pixels(_to_device(self.pixels[rows], device), image_processor)


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy to ``device``; to CUDA through pinned memory, so the copy does not wait on the host."""
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def build_pair_data(
    dataset,
    processor,
    *,
    max_length: int,
    caption_template: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> PairData:
    """Decode and tokenise a canonical split (columns ``image``, ``caption`` or ``label``).

    Without a ``caption`` column, captions are the label put into ``caption_template``
    (``workbench.prompts.fill_template``; FLYP's class-name captions). ``max_length`` is the
    text tower's context (``config.text_config.max_position_embeddings``; tokenizers often
    leave it unset). Rows whose image cannot be decoded are dropped with a warning.
    """
    tokenizer = processor.tokenizer
    if "caption" in dataset.column_names:
        captions = column_values(dataset, "caption")
        empty = [i for i, c in enumerate(captions) if not c.strip()]
        if empty:
            raise DataError(f"caption column is empty in {len(empty)} rows (first: row {empty[0]}); fill or drop them")
    elif caption_template and "label" in dataset.column_names:
        captions = [fill_template(caption_template, str(label)) for label in column_values(dataset, "label")]
    else:
        raise DataError("training data needs a caption column or a label column with a caption template")
    pixel_set = pixels_for(dataset, processor.image_processor, cache_dir=cache_dir, progress=progress, desc="decoding training images")
    ids, truncated = tokenize_captions(tokenizer, captions, max_length=max_length)
    truncated = [i for i in truncated if bool(pixel_set.valid[i])]  # pairs dropped for their image don't count
    if truncated:
        print(
            f"note: {len(truncated)} caption(s) longer than the text context ({max_length} tokens) were truncated "
            f"(first: row {truncated[0]})"
        )
    keep = torch.nonzero(pixel_set.valid).flatten()
    if pixel_set.n_bad:
        row, why = pixel_set.bad_rows[0]
        print(f"warning: skipping {pixel_set.n_bad} training rows with unreadable images (first: row {row}: {why})")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return PairData(
        pixels=pixel_set.pixels[keep] if pixel_set.n_bad else pixel_set.pixels,
        token_ids=[ids[int(i)] for i in keep],
        pad_id=int(pad_id),
        source_rows=keep,
        truncated_captions=len(truncated),
    )

"""Training pairs held in memory: decoded pixels (uint8) and token ids, batched on demand.

Images are decoded and resized once (``workbench.data.pixels_for``) and normalised per
batch; captions are tokenised once and padded per batch to the longest caption.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

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
    # Per pair, the value of each group column asked for (balanced sampling, alignment) and the label.
    group_values: dict[str, list[str]] = field(default_factory=dict)
    labels: list[str] | None = None

    def __len__(self) -> int:
        return len(self.token_ids)

    def group_codes(self, columns: Sequence[str]) -> tuple[torch.Tensor, list[list[str]]]:
        """(N, A) int64 group index of every pair per column, and each column's group names (sorted)."""
        missing = [c for c in columns if c not in self.group_values]
        if missing:
            raise ValueError(f"training pairs carry no group column {missing[0]!r} (carried: {', '.join(self.group_values) or 'none'})")
        codes, names = [], []
        for column in columns:
            values = self.group_values[column]
            groups = sorted(set(values))
            index = {g: i for i, g in enumerate(groups)}
            codes.append(torch.tensor([index[v] for v in values], dtype=torch.int64))
            names.append(groups)
        if not codes:
            return torch.zeros((len(self), 0), dtype=torch.int64), []
        return torch.stack(codes, dim=1), names

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
    group_columns: Sequence[str] = (),
) -> PairData:
    """Decode and tokenise a canonical split (columns ``image``, ``caption`` or ``label``).

    Without a ``caption`` column, captions are the label put into ``caption_template``
    (``workbench.prompts.fill_template``; FLYP's class-name captions). ``max_length`` is the
    text tower's context (``config.text_config.max_position_embeddings``; tokenizers often
    leave it unset). Rows whose image cannot be decoded are dropped with a warning.
    ``group_columns`` are carried per pair (``PairData.group_values``), with the labels when
    the split has them, for balanced sampling and the alignment regularizer.
    """
    absent = [c for c in group_columns if c not in dataset.column_names]
    if absent:
        raise DataError(
            f"training split has no column {absent[0]!r} (columns: {', '.join(dataset.column_names)}); "
            "fix --balance-groups / --align-attributes"
        )
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
    kept = keep.tolist()
    group_values = {}
    for column in dict.fromkeys(group_columns):
        values = column_values(dataset, column)
        group_values[column] = [str(values[i]) for i in kept]
    labels = None
    if "label" in dataset.column_names:
        all_labels = column_values(dataset, "label")
        labels = [str(all_labels[i]) for i in kept]
    return PairData(
        pixels=pixel_set.pixels[keep] if pixel_set.n_bad else pixel_set.pixels,
        token_ids=[ids[int(i)] for i in keep],
        pad_id=int(pad_id),
        source_rows=keep,
        truncated_captions=len(truncated),
        group_values=group_values,
        labels=labels,
    )

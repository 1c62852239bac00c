"""Captions as token ids: truncation that keeps CLIP's end-of-text token, padding per batch."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


def tokenize_captions(tokenizer, captions: Iterable[str], max_length: int) -> tuple[list[list[int]], list[int]]:
    """Token ids per caption, truncated to the model's context. Returns (ids, truncated rows)."""
    ids = tokenizer(list(captions), add_special_tokens=True, truncation=False)["input_ids"]
    truncated = [i for i, seq in enumerate(ids) if len(seq) > max_length]
    eos = tokenizer.eos_token_id
    for i in truncated:
        # Keep the end-of-text token: CLIP pools the text at its position.
        ids[i] = ids[i][: max_length - 1] + [eos]
    return ids, truncated


def pad_token_ids(batch: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence in the batch (not to 77: a third of the step time on small models)."""
    width = max(len(s) for s in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, s in enumerate(batch):
        input_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return input_ids, mask


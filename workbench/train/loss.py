"""Symmetric contrastive (InfoNCE) loss over the global batch of all processes.

Each process holds B image/text pairs. Features are all-gathered *with gradient*
(``torch.distributed.nn.functional.all_gather``) and the loss is computed for the local
rows against all N = W*B columns, labels offset by ``B * rank`` (open_clip's
``--local-loss --gather-with-grad``). Averaged over processes by DDP, the gradient equals
that of one process holding the concatenated batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def gather_with_grad(features: torch.Tensor) -> torch.Tensor:
    """Concatenate ``features`` of every process in rank order, keeping the autograd graph.

    Every process must pass the same number of rows.
    """
    world, _ = _distributed()
    if world == 1:
        return features
    import warnings

    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        # Deprecated in favour of a private functional API; this public one carries the
        # gradient back to every rank (reduce-scatter in backward), which is what we need.
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated.*", category=FutureWarning)
        return torch.cat(all_gather(features), dim=0)


def contrastive_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """Mean over the local rows of 1/2 [CE(s I T^T) + CE(s T I^T)], columns from all processes.

    ``log_scale`` is CLIP's ``logit_scale`` parameter (natural log of the temperature scale).
    Features need not be normalised; they are L2-normalised here in float32.
    """
    loss, _, _ = contrastive_loss_and_features(image_features, text_features, log_scale)
    return loss


def contrastive_loss_and_features(
    image_features: torch.Tensor, text_features: torch.Tensor, log_scale: torch.Tensor,
    row_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`contrastive_loss` and the L2-normalised features of the global batch it gathered.

    The gathered features keep their graph, so a term computed from them (the alignment
    regularizer) differentiates back into every process's encoder like the loss does.
    ``row_weights`` (this process's B rows; balanced fine-tuning by reweighting) turns the
    mean over rows into sum(w_i l_i) / sum(w) over the global batch: each process returns
    its rows' share times the process count, so DDP's average is that global weighted mean.
    """
    if image_features.shape != text_features.shape:
        raise ValueError(
            f"contrastive_loss: image features {tuple(image_features.shape)} and text features "
            f"{tuple(text_features.shape)} must have the same shape (one caption per image)"
        )
    image = F.normalize(image_features.float(), dim=-1)
    text = F.normalize(text_features.float(), dim=-1)
    world, rank = _distributed()
    all_image = gather_with_grad(image)
    all_text = gather_with_grad(text)
    scale = log_scale.float().exp()
    local = image.shape[0]
    labels = torch.arange(local, device=image.device) + local * rank
    logits_image = scale * image @ all_text.T
    logits_text = scale * text @ all_image.T
    if row_weights is None:
        loss = 0.5 * (F.cross_entropy(logits_image, labels) + F.cross_entropy(logits_text, labels))
        return loss, all_image, all_text
    per_row = 0.5 * (F.cross_entropy(logits_image, labels, reduction="none")
                     + F.cross_entropy(logits_text, labels, reduction="none"))
    weights = row_weights.to(device=image.device, dtype=torch.float32)
    if weights.shape != (local,):
        raise ValueError(f"contrastive_loss: {tuple(weights.shape)} row weights for {local} rows")
    total_weight = gather_without_grad(weights).sum()
    loss = (per_row * weights).sum() * world / total_weight
    return loss, all_image, all_text


def gather_without_grad(values: torch.Tensor) -> torch.Tensor:
    """Concatenate ``values`` of every process in rank order (no autograd; codes, labels).

    Every process must pass the same shape.
    """
    world, _ = _distributed()
    if world == 1:
        return values
    parts = [torch.empty_like(values) for _ in range(world)]
    dist.all_gather(parts, values.contiguous())
    return torch.cat(parts, dim=0)

"""Distribution-alignment regularizer (FairCLIP-style; Luo et al., CVPR 2024).

For each sensitive attribute and each of its groups present in the batch, the term is the
Sinkhorn divergence between the group's distribution of matched image-text similarities
(the cosine similarity of each image with its own caption: the diagonal of the logits
before the temperature) and the whole batch's distribution of them; the terms of every
attribute and group are summed and multiplied by the weight. It is zero when every group's
similarities follow the batch's distribution, and grows as a group's matched pairs score
systematically higher or lower than the rest.

The divergence is ``geomloss.SamplesLoss("sinkhorn", p=2, blur=...)``: the debiased
Sinkhorn divergence between the two point clouds in one dimension (uniform weights),
exactly 0 for equal distributions. It is computed on the *gathered* global batch (the
features ``workbench.train.loss`` gathered with gradient, the group codes gathered
without), identically on every process; with DDP averaging the gradients, N processes
then take the step one process takes on the concatenated batch.

The term depends on the features alone, so exact accumulation (``--accumulation-steps`` > 1,
:func:`workbench.train.accumulate.accumulated_step`) carries it: it is computed once on the
cached features of the whole local batch, and each micro-batch's recomputation is
back-propagated against its slice of the resulting feature gradient.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from workbench.train.accumulate import accumulated_step, plain_backward
from workbench.train.loss import contrastive_loss_and_features, gather_without_grad

DEFAULT_BLUR = 0.01  # cosine similarities lie in [-1, 1]; 0.01 resolves shifts of about a point


@dataclass(frozen=True)
class Alignment:
    """The regularizer's settings and the group codes of every training pair.

    ``group_codes[i, a]`` is pair ``i``'s group index in ``attributes[a]`` (names in
    ``group_names[a]``).
    """

    weight: float
    attributes: tuple[str, ...]
    group_codes: torch.Tensor  # int64 (N, A)
    group_names: tuple[tuple[str, ...], ...]
    blur: float = DEFAULT_BLUR

    def describe(self) -> dict:
        """What ``config.json`` states under ``"align"``."""
        return {
            "weight": self.weight,
            "attributes": list(self.attributes),
            "groups": {a: list(g) for a, g in zip(self.attributes, self.group_names)},
            "divergence": f"geomloss SamplesLoss('sinkhorn', p=2, blur={self.blur:g}) between each group's and the "
                          "batch's matched cosine similarities, summed over attributes and groups",
        }


def _sinkhorn(blur: float):
    from geomloss import SamplesLoss  # imported on use: only runs with the regularizer need it

    return SamplesLoss("sinkhorn", p=2, blur=blur)


def alignment_term(similarity: torch.Tensor, group_codes: torch.Tensor, blur: float = DEFAULT_BLUR) -> torch.Tensor:
    """Sum over attributes (columns of ``group_codes``) and the groups present in the batch of
    the Sinkhorn divergence between that group's similarities and all of ``similarity``.

    ``similarity`` (N,) matched-pair similarities; ``group_codes`` (N, A) integer groups.
    """
    if similarity.ndim != 1:
        raise ValueError(f"alignment_term: similarity must be one-dimensional, got shape {tuple(similarity.shape)}")
    if group_codes.ndim != 2 or group_codes.shape[0] != similarity.shape[0]:
        raise ValueError(
            f"alignment_term: group codes {tuple(group_codes.shape)} must be (N, attributes) with N = {similarity.shape[0]}"
        )
    divergence = _sinkhorn(blur)
    batch = similarity.float()[:, None]
    total = similarity.new_zeros((), dtype=torch.float32)
    for a in range(group_codes.shape[1]):
        for g in torch.unique(group_codes[:, a]).tolist():
            members = batch[group_codes[:, a] == g]
            total = total + divergence(members, batch)
    return total


def matched_similarity(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each image with its own caption (rows L2-normalised already)."""
    return (image * text).sum(dim=-1)


def aligned_contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    log_scale: torch.Tensor,
    group_codes: torch.Tensor,
    *,
    weight: float,
    blur: float = DEFAULT_BLUR,
    row_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(contrastive + weight * alignment, contrastive, alignment) for this process's rows.

    ``group_codes`` (B, A) are the groups of this process's pairs; they are gathered like
    the features, so the alignment term is that of the global batch on every process.
    ``row_weights`` weight the contrastive part per row (balanced fine-tuning by reweighting).
    """
    contrastive, all_image, all_text = contrastive_loss_and_features(image_features, text_features, log_scale,
                                                                     row_weights)
    all_codes = gather_without_grad(group_codes.to(all_image.device))
    alignment = alignment_term(matched_similarity(all_image, all_text), all_codes, blur)
    return contrastive + weight * alignment, contrastive, alignment


def aligned_contrastive_step(
    encoder: nn.Module,
    micro_batches: Sequence[dict[str, torch.Tensor]],
    group_codes: torch.Tensor,
    *,
    weight: float,
    blur: float = DEFAULT_BLUR,
    backward: Callable[[torch.Tensor], Any] = plain_backward,
    no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    row_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Accumulate into ``.grad`` the gradient of contrastive + weight * alignment over the micro-batches.

    ``group_codes`` (B, A) are the groups of the local batch's rows, in micro-batch order.
    Returns the contrastive loss and the alignment term, detached.
    """

    def loss_fn(image: torch.Tensor, text: torch.Tensor, log_scale: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return aligned_contrastive_loss(image, text, log_scale, group_codes, weight=weight, blur=blur,
                                        row_weights=row_weights)

    _total, contrastive, alignment = accumulated_step(encoder, micro_batches, loss_fn, backward=backward, no_sync=no_sync)
    return contrastive, alignment


def build_alignment(codes: torch.Tensor, names: Sequence[Sequence[str]], attributes: Sequence[str], weight: float,
                    blur: float = DEFAULT_BLUR) -> Alignment:
    """An :class:`Alignment` from ``PairData.group_codes(attributes)``."""
    return Alignment(weight=float(weight), attributes=tuple(attributes), group_codes=codes,
                     group_names=tuple(tuple(n) for n in names), blur=float(blur))

"""One optimizer step's worth of gradient from one or several micro-batches.

The contrastive loss couples every row with every other row of the batch, so summing
per-micro-batch losses would shrink the negatives to one micro-batch. With k > 1
micro-batches this follows the gradient-cache method (Gao et al. 2021; open_clip's
``--accum-freq``): features of all micro-batches are computed without gradient, the
loss of the whole batch gives the gradient with respect to each feature, then each
micro-batch is recomputed with gradient and back-propagated against its slice of that
feature gradient. The RNG state of each micro-batch's first forward is replayed for its
second one, so dropout draws the same masks and the result stays exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from workbench.train.loss import contrastive_loss_and_features

MicroBatch = dict[str, torch.Tensor]


def _capture_rng() -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _restore_rng(state: tuple[torch.Tensor, list[torch.Tensor] | None]) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def plain_backward(loss: torch.Tensor) -> None:
    loss.backward()


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]


def accumulated_step(
    encoder: nn.Module,
    micro_batches: Sequence[MicroBatch],
    loss_fn: LossFn,
    *,
    backward: Callable[[torch.Tensor], Any] = plain_backward,
    no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> tuple[torch.Tensor, ...]:
    """Accumulate into ``.grad`` the gradient of ``loss_fn`` on the features of all micro-batches together.

    ``loss_fn(image, text, log_scale)`` sees the features of the whole local batch (micro-batches
    concatenated in order) and returns a tuple whose first element is differentiated; any
    function of the features alone is exact under accumulation (the contrastive loss, or it
    plus the alignment term of :mod:`workbench.train.align`). ``encoder`` is a (possibly
    DDP-wrapped) :class:`ContrastiveEncoder`; each micro-batch is its keyword arguments.
    ``backward`` is ``accelerator.backward`` under Accelerate (loss scaling for fp16),
    ``no_sync`` is ``lambda: accelerator.no_sync(model)`` so DDP all-reduces only on the last
    backward. Returns ``loss_fn``'s outputs, detached.
    """
    if not micro_batches:
        raise ValueError("contrastive_step: no micro-batches")
    if len(micro_batches) == 1:
        image, text, log_scale = encoder(**micro_batches[0])
        outputs = loss_fn(image, text, log_scale)
        backward(outputs[0])
        return tuple(o.detach() for o in outputs)

    # Pass 1: features of every micro-batch, no graph kept.
    rng_states = []
    cached_image, cached_text = [], []
    log_scale_value = None
    with torch.no_grad():
        for mb in micro_batches:
            rng_states.append(_capture_rng())
            image, text, log_scale = encoder(**mb)
            cached_image.append(image.float())
            cached_text.append(text.float())
            log_scale_value = log_scale.detach().float()
    sizes = [t.shape[0] for t in cached_image]

    # Loss of the whole batch; gradient with respect to every cached feature and the scale.
    all_image = torch.cat(cached_image).requires_grad_(True)
    all_text = torch.cat(cached_text).requires_grad_(True)
    scale_leaf = log_scale_value.clone().requires_grad_(True)
    outputs = loss_fn(all_image, all_text, scale_leaf)
    grad_image, grad_text, grad_scale = torch.autograd.grad(outputs[0], (all_image, all_text, scale_leaf))
    grad_image, grad_text = grad_image.split(sizes), grad_text.split(sizes)

    # Pass 2: recompute each micro-batch with gradient; chain rule through its feature slice.
    after_pass1 = _capture_rng()
    last = len(micro_batches) - 1
    for j, mb in enumerate(micro_batches):
        sync = contextlib.nullcontext() if j == last else no_sync()
        _restore_rng(rng_states[j])
        with sync:
            image, text, log_scale = encoder(**mb)
            surrogate = (image.float() * grad_image[j]).sum() + (text.float() * grad_text[j]).sum()
            # The scale's gradient is added once; the product keeps it in this graph for DDP.
            surrogate = surrogate + log_scale.float() * (grad_scale if j == 0 else torch.zeros_like(grad_scale))
            backward(surrogate)
    _restore_rng(after_pass1)
    return tuple(o.detach() for o in outputs)


def contrastive_step(
    encoder: nn.Module,
    micro_batches: Sequence[MicroBatch],
    *,
    backward: Callable[[torch.Tensor], Any] = plain_backward,
    no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    row_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Accumulate into ``.grad`` the gradient of the contrastive loss of all micro-batches
    together (:func:`accumulated_step`), weighted per row by ``row_weights`` when given (the
    local batch's rows in micro-batch order); returns the local loss, detached."""

    def loss_fn(image: torch.Tensor, text: torch.Tensor, log_scale: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (contrastive_loss_and_features(image, text, log_scale, row_weights)[0],)

    (loss,) = accumulated_step(encoder, micro_batches, loss_fn, backward=backward, no_sync=no_sync)
    return loss


def split_micro_batches(batch: MicroBatch, micro_batch_size: int) -> list[MicroBatch]:
    """Split a batch (dict of tensors with equal first dimension) into chunks of ``micro_batch_size``."""
    n = next(iter(batch.values())).shape[0]
    if n % micro_batch_size:
        raise ValueError(f"batch of {n} rows does not split into micro-batches of {micro_batch_size}")
    return [{k: v[i : i + micro_batch_size] for k, v in batch.items()} for i in range(0, n, micro_batch_size)]

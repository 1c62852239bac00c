"""The contrastive loss: hand-computed values, CLIP's own loss as a second code path."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from train_fixtures import random_batch, tiny_model

from workbench.train import contrastive_loss


def test_two_pairs_by_hand():
    # Orthonormal features, image i matches text i: similarity 1 on the diagonal, 0 off it.
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # normalised inside the loss
    log_scale = torch.tensor(math.log(10.0))
    # Each row: -log(e^10 / (e^10 + e^0)) in both directions.
    expected = -math.log(math.exp(10) / (math.exp(10) + 1))
    assert abs(float(contrastive_loss(image, text, log_scale)) - expected) < 1e-6


def test_chance_level_is_log_batch_size():
    # Scale e^-50: every logit is ~0, so each row is uniform over the 8 columns.
    image = torch.randn(8, 4)
    assert abs(float(contrastive_loss(image, torch.randn(8, 4), torch.tensor(-50.0))) - math.log(8)) < 1e-4


def test_equals_transformers_clip_loss():
    model = tiny_model(seed=3)
    batch = random_batch(12, seed=4)
    with torch.no_grad():
        out = model(**batch, return_loss=True)
    ours = contrastive_loss(out.image_embeds, out.text_embeds, model.logit_scale.detach())
    assert abs(float(ours) - float(out.loss)) < 1e-5


def test_global_loss_is_not_the_mean_of_per_half_losses():
    """Why the gather matters: per-device losses see fewer negatives and give another number."""
    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    text = image + 0.5 * text
    scale = torch.tensor(math.log(20.0))
    whole = contrastive_loss(image, text, scale)
    halves = 0.5 * (contrastive_loss(image[:8], text[:8], scale) + contrastive_loss(image[8:], text[8:], scale))
    assert abs(float(whole) - float(halves)) > 1e-2


def test_shape_mismatch_is_refused():
    import pytest

    with pytest.raises(ValueError, match="same shape"):
        contrastive_loss(torch.randn(4, 8), torch.randn(5, 8), torch.tensor(1.0))


def test_gradient_matches_autograd_of_explicit_formula():
    image = torch.randn(6, 5, requires_grad=True)
    text = torch.randn(6, 5, requires_grad=True)
    scale = torch.tensor(2.0, requires_grad=True)
    contrastive_loss(image, text, scale).backward()
    i2, t2, s2 = image.detach().clone().requires_grad_(), text.detach().clone().requires_grad_(), scale.detach().clone().requires_grad_()
    logits = s2.exp() * F.normalize(i2, dim=-1) @ F.normalize(t2, dim=-1).T
    y = torch.arange(6)
    (0.5 * (F.cross_entropy(logits, y) + F.cross_entropy(logits.T, y))).backward()
    assert torch.allclose(image.grad, i2.grad, atol=1e-6)
    assert torch.allclose(text.grad, t2.grad, atol=1e-6)
    assert torch.allclose(scale.grad, s2.grad, atol=1e-6)


def test_row_weights_give_the_weighted_mean_of_the_rows_losses_by_hand():
    from workbench.train.loss import contrastive_loss_and_features

    # Rows 0 and 1 match perfectly (similarity 1, others 0); row 2's image points at text 0.
    image = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    text = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    scale = 2.0
    logits = scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    rows = [0.5 * (float(-torch.log_softmax(logits[i], 0)[i]) + float(-torch.log_softmax(logits.T[i], 0)[i]))
            for i in range(3)]
    weights = torch.tensor([1.0, 1.0, 4.0])
    loss, _, _ = contrastive_loss_and_features(image, text, torch.tensor(math.log(scale)), weights)
    assert float(loss) == pytest.approx((rows[0] + rows[1] + 4 * rows[2]) / 6, rel=1e-6)
    # Equal weights are the plain mean; the weighted loss leans to the badly matched row.
    ones, _, _ = contrastive_loss_and_features(image, text, torch.tensor(math.log(scale)), torch.ones(3))
    assert float(ones) == pytest.approx(float(contrastive_loss(image, text, torch.tensor(math.log(scale)))), rel=1e-6)
    assert float(loss) > float(ones)
    with pytest.raises(ValueError, match=r"\(2,\) row weights for 3 rows"):
        contrastive_loss_and_features(image, text, torch.tensor(0.0), torch.ones(2))

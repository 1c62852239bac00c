"""WiSE-FT: interpolate the weights of the base and the fine-tuned model.

theta(alpha) = (1 - alpha) * theta_base + alpha * theta_tuned (Wortsman et al. 2022).
For LoRA, interpolating the base with the merged model is exactly scaling the merged
delta by alpha, so the same function serves after ``merge_and_unload``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import nn


def interpolate_state_dicts(
    base: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """Weight-space interpolation; non-float tensors (position ids) are taken from ``tuned``."""
    if set(base) != set(tuned):
        missing = sorted(set(base) ^ set(tuned))[:5]
        raise ValueError(f"WiSE-FT needs two models of the same architecture; keys differ, e.g. {missing}")
    out = {}
    for key, t in tuned.items():
        b = base[key]
        if b.shape != t.shape:
            raise ValueError(f"WiSE-FT: {key} has shape {tuple(b.shape)} in base, {tuple(t.shape)} in tuned")
        if t.is_floating_point():
            # (1 - a) * b + a * t, not lerp, so alpha 0 and 1 give the end points bit for bit.
            out[key] = ((1.0 - alpha) * b.to(t.device, torch.float32) + alpha * t.float()).to(t.dtype)
        else:
            out[key] = t.clone()
    return out


def wise_model(base: nn.Module, tuned: nn.Module, alpha: float) -> nn.Module:
    """A copy of ``tuned`` holding the interpolated weights (both plain models, e.g. CLIPModel)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"WiSE-FT alpha must lie in [0, 1], got {alpha}")
    mixed = copy.deepcopy(tuned)
    mixed.load_state_dict(interpolate_state_dicts(base.state_dict(), tuned.state_dict(), alpha))
    return mixed


def check_alphas(alphas: Sequence[float]) -> list[float]:
    """Validate a sweep of alphas (each in [0, 1]); returns them sorted without duplicates."""
    bad = [a for a in alphas if not 0.0 <= a <= 1.0]
    if bad:
        raise ValueError(f"--wise-alpha values must lie in [0, 1]; got {bad}")
    return sorted(set(float(a) for a in alphas))

"""Prompt text and prompt ensembles: the one place that fills templates and averages prompts.

Zero-shot classification, the audit and the recipes all build class embeddings the same
way (CLIP paper, section 3.1.4; open_clip's ``zero_shot_classifier``): fill every template
with the class wording, L2-normalise each prompt embedding, average, normalise again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

PLACEHOLDER = "{}"


def fill_template(template: str, word: str) -> str:
    """Put ``word`` where ``{}`` stands in ``template``.

    Plain replacement, not ``str.format``: templates written by users may hold other
    braces ("a photo of {} (ISIC)") that ``format`` would reject or misread.

    >>> fill_template("a photo of {}.", "a nevus")
    'a photo of a nevus.'
    >>> fill_template("{} {}", "x")
    'x x'
    """
    return template.replace(PLACEHOLDER, word)


def fill_templates(templates: Sequence[str], word: str) -> list[str]:
    """Every template filled with ``word``, in order."""
    return [fill_template(t, word) for t in templates]


def ensemble(vectors: torch.Tensor | np.ndarray | Sequence[np.ndarray]) -> torch.Tensor | np.ndarray:
    """One ensembled embedding from prompt embeddings (P, D): normalise each, average, normalise.

    Returns the same kind it was given (a torch tensor for a tensor, else a numpy array).

    >>> ensemble(np.array([[3.0, 4.0], [0.0, 2.0]])).round(4).tolist()
    [0.3162, 0.9487]
    """
    as_numpy = not isinstance(vectors, torch.Tensor)
    x = torch.as_tensor(np.stack(vectors) if as_numpy and not isinstance(vectors, np.ndarray) else vectors)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"ensemble: expected a non-empty (prompts, dim) array, got shape {tuple(x.shape)}")
    out = F.normalize(F.normalize(x, dim=-1).mean(dim=0), dim=-1)
    return out.numpy() if as_numpy else out

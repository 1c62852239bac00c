"""One module whose forward runs whatever towers a training step needs.

DDP and FSDP only synchronise work that passes through the wrapped module's
``forward``; calling ``get_text_features`` on the inner model would bypass them. So
every tower call of the training step goes through :class:`ContrastiveEncoder`.
"""

from __future__ import annotations

import torch
from torch import nn


class ContrastiveEncoder(nn.Module):
    """Wraps a ``CLIPModel`` (or a peft model around one).

    ``forward`` returns ``(image_features, text_features, log_scale)``, projected but not
    normalised. Pass ``image_features`` instead of ``pixel_values`` to reuse cached image
    embeddings (frozen image tower); the vision tower is then not run. A tower whose
    inputs are missing is skipped and its output is ``None`` (evaluation, caching).
    """

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        if image_features is None and pixel_values is not None:
            image_features = self.clip.get_image_features(pixel_values=pixel_values).pooler_output
        text_features = None
        if input_ids is not None:
            text_features = self.clip.get_text_features(
                input_ids=input_ids, attention_mask=attention_mask
            ).pooler_output
        return image_features, text_features, self.clip.logit_scale

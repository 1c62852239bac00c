"""Fine-tune CLIP on a second domain: name the colour of a shape (synthetic, compositional captions).

    accelerate launch recipes/shapes.py                        # demo shapes corpus, tiny base CLIP, CPU
    accelerate launch recipes/shapes.py --caption-column caption --strategy full   # corpus captions instead

The same engine as recipes/medical.py; only the defaults differ. Every flag is a field
below or of workbench.train.FinetuneConfig (`--help` lists them all).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar

from workbench.data import DEMO_SHAPES
from workbench.models import DEMO_MODEL
from workbench.pipeline import recipe_main
from workbench.train import FinetuneConfig


@dataclass
class ShapesConfig(FinetuneConfig):
    model: str = DEMO_MODEL
    dataset: str = DEMO_SHAPES
    # FLYP: train on captions built from the class name with the first template; the
    # corpus captions already match the base model, so they would teach it little.
    caption_column: str | None = None
    # The demo's own settings, applied only when --dataset is the demo shapes corpus
    # (workbench.pipeline.apply_demo_defaults); other data gets the generic field defaults.
    DEMO_DEFAULTS: ClassVar[dict] = {
        "group_columns": ["shape"],
        "templates": ["a {} shape.", "something {}.", "a {} object on a background."],
        "audit": "",
    }
    strategy: str = "frozen-image"  # LiT: the base image tower already separates colours; teach the words
    # Demo default for the tiny base CLIP; real CLIPs want 1e-5 or lower.
    learning_rate: float = 3e-4
    epochs: int = 2
    per_device_batch_size: int = 64
    eval_steps: int = 20
    checkpoint_steps: int = 40
    audit: str = "auto"  # the demo: none; other data with --group-columns: generated into <run>/audit.yaml


def main(argv: list[str] | None = None) -> int:
    return recipe_main(ShapesConfig, argv, recipe="shapes")


if __name__ == "__main__":
    sys.exit(main())

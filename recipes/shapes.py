"""Fine-tune CLIP on a second domain: coloured shapes with compositional captions.

    accelerate launch recipes/shapes.py                        # demo shapes corpus, tiny base CLIP, CPU
    accelerate launch recipes/shapes.py --strategy frozen-image --epochs 5

The same engine as recipes/medical.py; only the defaults differ. Every flag is a field
below or of workbench.train.FinetuneConfig (`--help` lists them all).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from workbench.models import DEMO_MODEL
from workbench.train import FinetuneConfig, recipe_main
from workbench.train.demo_data import DEMO_SHAPES


@dataclass
class ShapesConfig(FinetuneConfig):
    model: str = DEMO_MODEL
    dataset: str = DEMO_SHAPES
    templates: list[str] = field(default_factory=lambda: ["a {}.", "a photo of a {}.", "a {} on a background."])
    strategy: str = "frozen-image"  # the base already sees shapes well; teach the words, keep the image tower
    # Demo default for the tiny base CLIP; real CLIPs want 1e-5 or lower.
    learning_rate: float = 3e-4
    epochs: int = 2
    per_device_batch_size: int = 64
    eval_steps: int = 20
    checkpoint_steps: int = 40


def main(argv: list[str] | None = None) -> int:
    return recipe_main(ShapesConfig, argv, recipe="shapes")


if __name__ == "__main__":
    sys.exit(main())

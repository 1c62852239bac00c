"""Fine-tune CLIP on a dermatology domain, then audit it for skin-tone and sex gaps.

    accelerate launch recipes/medical.py                       # demo: tiny base CLIP, synthetic lesions, CPU, minutes
    accelerate launch recipes/medical.py --strategy lora       # or frozen-image; --wise-alpha 0 0.5 1 for WiSE-FT
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml recipes/medical.py \\
        --model openai/clip-vit-base-patch32 --learning-rate 1e-5 --dataset <hub id or folder> \\
        --image-column image --caption-column caption --label-column diagnosis \\
        --group-columns skin_tone sex --audit ''

Every flag is a field below or of workbench.train.FinetuneConfig (`--help` lists them all).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from workbench.data import DEMO_DATASET
from workbench.models import DEMO_MODEL
from workbench.pipeline import recipe_main
from workbench.train import FinetuneConfig


@dataclass
class MedicalConfig(FinetuneConfig):
    model: str = DEMO_MODEL
    dataset: str = DEMO_DATASET
    group_columns: list[str] = field(default_factory=lambda: ["skin_tone", "sex"])
    templates: list[str] = field(
        default_factory=lambda: ["a dermoscopy image of {}.", "a clinical photo of {}.", "a skin lesion: {}."]
    )
    # Demo default: the tiny demo CLIP barely moves at CLIP's usual rates. For a real CLIP
    # pass --learning-rate 1e-5 (1e-6 for very small medical sets).
    learning_rate: float = 5e-4
    epochs: int = 3
    per_device_batch_size: int = 64
    eval_steps: int = 20
    checkpoint_steps: int = 40
    audit: str = "audits/derm_demo.yaml"


def main(argv: list[str] | None = None) -> int:
    return recipe_main(MedicalConfig, argv, recipe="medical")


if __name__ == "__main__":
    sys.exit(main())

"""Fine-tune CLIP on a dermatology domain, then audit it for skin-tone and sex gaps.

    accelerate launch recipes/medical.py                       # demo: tiny base CLIP, synthetic lesions, CPU, minutes
    accelerate launch recipes/medical.py --strategy lora       # or frozen-image; --wise-alpha 0 0.5 1 for WiSE-FT
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml recipes/medical.py \\
        --model openai/clip-vit-base-patch32 --learning-rate 1e-5 --dataset <hub id or folder> \\
        --image-column image --caption-column caption --label-column diagnosis \\
        --group-columns skin_tone sex          # the audit is generated from the data (README: "Your own data")

Every flag is a field below or of workbench.train.FinetuneConfig (`--help` lists them all).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar

from workbench.data import DEMO_DATASET
from workbench.models import DEMO_MODEL
from workbench.pipeline import recipe_main
from workbench.train import FinetuneConfig


@dataclass
class MedicalConfig(FinetuneConfig):
    model: str = DEMO_MODEL
    dataset: str = DEMO_DATASET
    # The demo's own settings, applied only when --dataset is the demo (workbench.pipeline.apply_demo_defaults):
    # any other data gets the generic defaults of the fields (no group columns, "a photo of {}.", an audit
    # generated from the data).
    DEMO_DEFAULTS: ClassVar[dict] = {
        "group_columns": ["skin_tone", "sex"],
        "templates": ["a dermoscopy image of {}.", "a clinical photo of {}.", "a skin lesion: {}."],
        "audit": "audits/derm_demo.yaml",
    }
    # Demo default: the tiny demo CLIP barely moves at CLIP's usual rates. For a real CLIP
    # pass --learning-rate 1e-5 (1e-6 for very small medical sets).
    learning_rate: float = 5e-4
    epochs: int = 3
    per_device_batch_size: int = 64
    eval_steps: int = 20
    checkpoint_steps: int = 40
    audit: str = "auto"  # the demo: audits/derm_demo.yaml; other data: generated into <run>/audit.yaml


def main(argv: list[str] | None = None) -> int:
    return recipe_main(MedicalConfig, argv, recipe="medical")


if __name__ == "__main__":
    sys.exit(main())

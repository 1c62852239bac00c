"""Fine-tune CLIP on a dermatology domain, then audit it.

    accelerate launch recipes/medical.py                     # demo: tiny base CLIP, synthetic lesions, CPU, minutes
    accelerate launch recipes/medical.py --strategy lora     # or frozen-image
    accelerate launch recipes/medical.py --model openai/clip-vit-base-patch32 --learning-rate 1e-5 \
        --dataset <hub id or folder> --image-column image --caption-column caption \
        --label-column diagnosis --group-columns skin_tone sex --audit ''

Every flag is a field of MedicalConfig / workbench.train.FinetuneConfig (`--help` lists them).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from workbench.data import DEMO_DATASET
from workbench.models import DEMO_MODEL
from workbench.train import FinetuneConfig, finetune, next_steps, parse_recipe_args, run_audit_if_available


@dataclass
class MedicalConfig(FinetuneConfig):
    model: str = DEMO_MODEL
    dataset: str = DEMO_DATASET
    group_columns: list[str] = field(default_factory=lambda: ["skin_tone", "sex"])
    templates: list[str] = field(
        default_factory=lambda: ["a dermoscopy image of {}.", "a clinical photo of {}.", "a skin lesion: {}."]
    )
    # Demo default: the tiny demo CLIP barely moves at CLIP's usual rates; real CLIPs want 1e-5 or lower.
    learning_rate: float = 5e-4
    epochs: int = 3
    per_device_batch_size: int = 64
    eval_steps: int = 20
    checkpoint_steps: int = 40
    audit: str = "audits/derm_demo.yaml"


def main(argv: list[str] | None = None) -> int:
    config = parse_recipe_args(MedicalConfig, argv)
    run_dir = finetune(config, recipe="medical")
    from accelerate import PartialState

    if PartialState().is_main_process:
        if config.audit:
            run_audit_if_available(run_dir, config.audit)
        print(f"\nrun folder: {run_dir}")
        for cmd in next_steps(run_dir, config.audit or "audits/derm_demo.yaml"):
            print(f"next: {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

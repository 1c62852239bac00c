"""A small run folder audited by the real audit code, for the live probe and heat-map tests.

The base model is a tiny random CLIP; the "fine-tuned" model is the same with its
projections nudged by seeded noise, so the two rank images differently. The data is a
120-image demo dermatology split saved to disk, so the audit records a source the live
session can open again.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from workbench import schema
from workbench.audit.runner import run_audit
from workbench.demo.derm import generate_derm
from workbench.models import make_tiny_clip, save_clip

AUDIT_NAME = "live_demo"
SKEW_PROMPTS = ("a photo of a malignant lesion", "a benign lesion", "a harmless mole")
N_BOOT = 200
SEED = 3
AUDIT_YAML = f"""# Audit for the live probe tests.
# Second header line: kept when a prompt is added.
name: {AUDIT_NAME}
attributes:
  - column: skin_tone
    groups: [light, medium, dark]
    reference: light
  - column: sex
    groups: [female, male]
intersections:
  - [skin_tone, sex]
min_group_size: 5   # a comment further down: not kept by yaml.safe_dump
classes:
  labels: [melanoma, nevus, basal cell carcinoma, seborrheic keratosis]
  templates: ["dermoscopy image of {{}}"]
skew:
  prompts: {json.dumps(list(SKEW_PROMPTS))}
  k: [10, 20]
  targets: [uniform, data]
  extra_controls: ["a close-up photo"]
group_prompts:
  - attribute: skin_tone
    template: "a {{concept}} lesion on {{group}} skin"
    concepts: [malignant]
bootstrap:
  n_boot: {N_BOOT}
  seed: {SEED}
"""


def nudge_projections(model, scale: float = 0.5, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "projection" in name:
                param.add_(scale * param.std() * torch.randn(param.shape, generator=generator))


def write_audit_file(folder: Path) -> Path:
    path = folder / f"{AUDIT_NAME}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(AUDIT_YAML)
    return path


def build_live_run(root: Path, tokenizer, cache: Path) -> tuple[Path, Path]:
    """(run folder, audit file): a run folder whose base and model/ are audited into run/audit/live_demo."""
    data = root / "derm"
    generate_derm({"test": 120}, seed=5).save_to_disk(str(data))
    base_model, processor = make_tiny_clip(tokenizer, image_size=32, seed=1)
    save_clip(base_model, processor, root / "base")
    run = root / "runs" / "live-run"
    tuned, _ = make_tiny_clip(tokenizer, image_size=32, seed=1)
    nudge_projections(tuned)
    save_clip(tuned, processor, run / schema.RUN_MODEL_DIR)
    (run / schema.RUN_CONFIG_FILE).write_text(json.dumps({"recipe": "test"}))
    (run / schema.RUN_BASE_FILE).write_text(json.dumps({"model": str(root / "base"), "revision": None}))
    audit_file = write_audit_file(root / "audits")
    run_audit(audit_file, run, str(data), split="test", cache_dir=cache, progress=False)
    return run, audit_file

"""Run folders whose audit results are written by the real audit code on the demo data.

A "fine-tuned" model here is the demo base CLIP with its projections nudged by seeded noise:
the audit sees two different models, which is all the dashboard needs; training is tested
elsewhere. The training log and zero-shot file are the recipe's outputs, written by hand.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from fixture_runs import set_mtime, write_training_files

from workbench import schema
from workbench.audit.runner import run_audit
from workbench.data import DEMO_DATASET
from workbench.models import DEMO_MODEL, load_clip, save_clip

REPO = Path(__file__).resolve().parents[2]
AUDIT_FILE = REPO / "audits" / "derm_demo.yaml"
AUDIT_NAME = "derm_demo"
N_BOOT = 50


def _nudged_demo_model(folder: Path) -> None:
    model, processor = load_clip(DEMO_MODEL)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "projection" in name:
                param.add_(0.3 * param.std() * torch.randn(param.shape, generator=generator))
    save_clip(model, processor, folder)


def build_real_runs(root: Path, cache: Path) -> Path:
    """runs/demo-tuned (base and tuned audited), demo-base-only, and two broken copies."""
    tuned = root / "demo-tuned"
    write_training_files(tuned)
    _nudged_demo_model(tuned / schema.RUN_MODEL_DIR)
    run_audit(AUDIT_FILE, tuned, DEMO_DATASET, split="test", n_boot=N_BOOT, cache_dir=cache, progress=False)

    base_only = root / "demo-base-only"
    base_only.mkdir(parents=True)
    run_audit(AUDIT_FILE, {"base": DEMO_MODEL}, DEMO_DATASET, split="test", n_boot=N_BOOT, cache_dir=cache,
              output=base_only / schema.RUN_AUDIT_DIR / AUDIT_NAME, progress=False)

    corrupt = root / "demo-corrupt"
    shutil.copytree(tuned, corrupt)
    results = corrupt / schema.RUN_AUDIT_DIR / AUDIT_NAME / schema.RESULTS_FILE
    results.write_bytes(results.read_bytes()[: len(results.read_bytes()) // 2])  # a truncated copy

    old = root / "demo-old-schema"
    shutil.copytree(tuned, old)
    summary_path = old / schema.RUN_AUDIT_DIR / AUDIT_NAME / schema.SUMMARY_FILE
    summary = json.loads(summary_path.read_text())
    summary["schema_version"] = 0
    summary_path.write_text(json.dumps(summary))

    for i, run in enumerate((tuned, base_only, corrupt, old)):
        set_mtime(run, 2_000_000_000 - i * 1000)
    return root

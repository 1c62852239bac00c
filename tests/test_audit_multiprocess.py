"""Two processes under `accelerate launch` give the same audit as one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from workbench import schema

pytestmark = pytest.mark.slow

SPEC = """
name: mp
attributes:
  - {column: skin_tone, reference: light}
  - {column: sex}
min_group_size: 5
classes: {labels: [melanoma, nevus, basal cell carcinoma, seborrheic keratosis], templates: ["close-up of {}"]}
skew: {prompts: ["a photo of a malignant lesion"], k: [5], targets: [uniform]}
bootstrap: {n_boot: 50, seed: 0}
"""


def test_two_processes_match_one(tmp_path, small_derm, tiny_tokenizer):
    from workbench.audit import run_audit
    from workbench.models import make_tiny_clip, save_clip

    small_derm.save_to_disk(str(tmp_path / "data"))
    save_clip(*make_tiny_clip(tiny_tokenizer, image_size=32), tmp_path / "model")
    (tmp_path / "mp.yaml").write_text(SPEC)
    single = run_audit(tmp_path / "mp.yaml", str(tmp_path / "model"), str(tmp_path / "data"), cache_dir=None, progress=False)

    accelerate = Path(sys.executable).with_name("accelerate")
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "workbench.audit",
           "--model", str(tmp_path / "model"), "--data", str(tmp_path / "data"), "--audit", str(tmp_path / "mp.yaml"),
           "--output", str(tmp_path / "out"), "--cache-dir", "none", "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("results in ") == 1  # only the main process writes and reports
    multi = pd.read_parquet(tmp_path / "out" / schema.RESULTS_FILE)
    pd.testing.assert_frame_equal(single.results.reset_index(drop=True), multi, check_exact=False, atol=1e-5)

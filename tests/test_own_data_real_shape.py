"""The README's "Your own data" commands, as written, on a real-shape model (issue 12 item 6).

A model folder with the real ViT-B/32 shapes (``CLIPConfig()`` defaults, random weights, the
demo's tokenizer with the config's vocabulary set to it) sits in a Hugging Face cache layout
(``HF_HOME/hub/models--openai--clip-vit-base-patch32/snapshots/<commit>/`` + ``refs/main``);
``--model openai/clip-vit-base-patch32`` resolves it offline. The commands are read from the
README, so they cannot drift; only the folder names and a few-step budget are substituted.
CPU seconds and peak memory per strategy are printed (BENCHMARKS.md, "Your own data, real shape").
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from own_data_fixtures import ACCELERATE, REPO, make_csv_of_paths, make_image_folder

from workbench import schema

COMMIT = "3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268"
MODEL_ID = "openai/clip-vit-base-patch32"
FEW_STEPS = ["--max-steps", "2", "--warmup-steps", "1", "--per-device-batch-size", "8", "--eval-batch-size", "32",
             "--checkpoint-steps", "0"]


def readme_commands() -> list[list[str]]:
    """The shell commands between the own-data markers of README.md, continuation lines joined."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- own-data-commands -->\s*```bash\n(.*?)```", text, re.S).group(1)
    joined = re.sub(r"\\\n\s*", " ", block)
    return [shlex.split(line) for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory) -> Path:
    """HF_HOME with a ViT-B/32-shaped CLIP cached as openai/clip-vit-base-patch32 (random weights)."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

    from workbench.demo.base import ensure_demo_model
    from workbench.models import load_image_processor

    home = tmp_path_factory.mktemp("hf-home")
    repo = home / "hub" / "models--openai--clip-vit-base-patch32"
    snapshot = repo / "snapshots" / COMMIT
    tokenizer = CLIPTokenizer.from_pretrained(str(ensure_demo_model()))
    config = CLIPConfig()  # ViT-B/32: 512-wide text, 768-wide vision, patch 32, 224 px, 77 tokens
    config.text_config.vocab_size = len(tokenizer)
    config.text_config.bos_token_id = tokenizer.bos_token_id
    config.text_config.eos_token_id = tokenizer.eos_token_id
    config.text_config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    model = CLIPModel(config)
    model.save_pretrained(snapshot)
    image_processor = type(load_image_processor(str(ensure_demo_model())))()  # CLIP's defaults: 224 px, CLIP mean/std
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return home


def _run_timed(cmd: list[str], env: dict[str, str], timing: Path) -> subprocess.CompletedProcess:
    full = ["/usr/bin/time", "-f", "%e %U %S %M", "-o", str(timing), *cmd]
    return subprocess.run(full, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)


def _substituted(cmd: list[str], data: Path, out: Path) -> list[str]:
    swap = {".venv/bin/accelerate": str(ACCELERATE), "my_images/": str(data), "my_table.csv": str(data)}
    cmd = [swap.get(a, a) for a in cmd]
    i = cmd.index("--output-dir")
    cmd[i + 1] = str(out)
    return cmd


@pytest.mark.slow
@pytest.mark.parametrize(("layout", "strategy"), [("folder", "full"), ("folder", "frozen-image"), ("folder", "lora"),
                                                  ("csv", "full")])
def test_readme_commands_run_offline_on_a_real_shape_model(hub_home, tmp_path, layout, strategy):
    folder_cmd, csv_cmd = readme_commands()
    assert folder_cmd[folder_cmd.index("--model") + 1] == MODEL_ID == csv_cmd[csv_cmd.index("--model") + 1]
    if layout == "folder":
        data, cmd = make_image_folder(tmp_path / "my_images", n=240, size=224, fmt="jpg"), folder_cmd
    else:
        data, cmd = make_csv_of_paths(tmp_path / "table", n=240, size=224, fmt="jpg"), csv_cmd
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update({"HF_HOME": str(hub_home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    timing = tmp_path / "time.txt"
    result = _run_timed([*_substituted(cmd, data, out), *FEW_STEPS, "--strategy", strategy], env, timing)
    assert result.returncode == 0, result.stderr[-4000:]
    wall, user, system, peak_kb = timing.read_text().split()[-4:]
    print(f"\nREAL-SHAPE {layout} {strategy}: wall {float(wall):.0f} s, cpu {float(user) + float(system):.0f} s, "
          f"peak rss {int(peak_kb) / 1024 ** 2:.2f} GiB")
    stdout = result.stdout
    # What was inferred is said, before training.
    assert "note: no 'validation' split: holding out 0.1 of 'train' as it (stratified by diagnosis x skin_tone x sex" in stdout
    assert "note: no 'test' split" in stdout and "note: no 'caption' column" in stdout
    assert f"audit: no --audit given for this data; generated {out / 'audit.yaml'}" in stdout
    config = json.loads((out / schema.RUN_CONFIG_FILE).read_text())
    holdout = config["validation_holdout"]
    assert holdout["carved_from"] == "train" and holdout["rows"] + holdout["rows_left_in_train"] == 240
    assert config["train_pairs"] == holdout["rows_left_in_train"] and config["config"]["test_split"] == ""
    assert config["config"]["templates"] == ["a photo of {}."] and config["total_steps"] == 2
    base = json.loads((out / schema.RUN_BASE_FILE).read_text())
    assert base == {"model": MODEL_ID, "revision": None, "commit": COMMIT}
    audits = list((out / schema.RUN_AUDIT_DIR).glob(f"*/{schema.SUMMARY_FILE}"))
    assert len(audits) == 1
    summary = json.loads(audits[0].read_text())
    assert summary["verdict"] in ("pass", "warn", "fail", "inconclusive") and summary["headline"] in stdout
    lines = stdout.strip().splitlines()
    assert lines[-1].startswith("next: ") and lines[-1].endswith(f"-m streamlit run dashboards/app.py -- --runs {tmp_path}")
    assert any(f"--audit {out / 'audit.yaml'}" in ln and "--validation-fraction 0.1 --split-seed 0" in ln for ln in lines)
    # Noise: no third-party warning a user cannot act on.
    for noise in ("could not find a config file", "FutureWarning", "Traceback"):
        assert noise.lower() not in result.stderr.lower(), noise

"""User-shaped data for the own-data tests: an image folder (images + metadata.csv, and a stray
truth.json beside them) and a CSV of image paths, with the demo's lesions, written as a user would."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).parent / "accelerate"


def write_user_images(folder: Path, n: int, *, seed: int, size: int = 64, fmt: str = "png",
                      label_column: str = "diagnosis", groups: tuple[str, ...] = ("skin_tone", "sex")) -> list[dict]:
    """Write ``n`` demo lesion images into ``folder/images/`` and return one metadata row per image."""
    from workbench.demo.derm import generate_derm_rows

    cols = generate_derm_rows(n, seed=seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        name = f"images/img_{i:04d}.{fmt}"
        img = Image.fromarray(np.asarray(cols["image"][i], dtype=np.uint8))
        if img.size != (size, size):
            img = img.resize((size, size))
        img.save(folder / name, quality=90) if fmt == "jpg" else img.save(folder / name)
        row = {"file_name": name, label_column: cols["label"][i]}
        row.update({g: cols[g][i] for g in groups})
        rows.append(row)
    return rows


def _write_csv(path: Path, rows: list[dict], rename: dict[str, str] | None = None) -> None:
    rename = rename or {}
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[rename.get(k, k) for k in rows[0]])
        w.writeheader()
        for r in rows:
            w.writerow({rename.get(k, k): v for k, v in r.items()})


def make_image_folder(folder: Path, n: int = 80, *, seed: int = 3, size: int = 64, fmt: str = "png", **kw) -> Path:
    """An image folder as a user has it: images/, metadata.csv, and a truth.json that is not a table of the data."""
    rows = write_user_images(folder, n, seed=seed, size=size, fmt=fmt, **kw)
    _write_csv(folder / "metadata.csv", rows)
    (folder / "truth.json").write_text(json.dumps({"annotator": "dr. x", "labels_checked": True}))
    return folder


def make_csv_of_paths(folder: Path, n: int = 80, *, seed: int = 4, size: int = 64, fmt: str = "png", **kw) -> Path:
    """A CSV whose ``image`` column holds paths relative to the CSV."""
    rows = write_user_images(folder, n, seed=seed, size=size, fmt=fmt, **kw)
    path = folder / "data.csv"
    _write_csv(path, rows, rename={"file_name": "image"})
    return path


def launch(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``.venv/bin/accelerate launch --quiet <args>`` from the repository root, as the README runs it."""
    full_env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    full_env.update({"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})})
    return subprocess.run([str(ACCELERATE), "launch", "--quiet", *args], cwd=REPO,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def run_module(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python <args>`` with this interpreter from the repository root."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""

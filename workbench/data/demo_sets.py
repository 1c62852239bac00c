"""The demo data sets by name: ``workbench/demo-derm`` and ``workbench/demo-shapes``.

Demo names resolve like hub ids: each is generated once (by :mod:`workbench.demo`) into
the data home, then loaded from disk as a ``save_to_disk`` folder.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

from workbench.demo.derm import generate_derm
from workbench.demo.shapes import generate_shapes
from workbench.io import atomic_dir
from workbench.paths import data_home

DEMO_DATASET = "workbench/demo-derm"
DEMO_SHAPES = "workbench/demo-shapes"


def _generate_derm_demo():
    return generate_derm(seed=0)


def _generate_shapes_demo():
    # Seed 7: images the base never saw in pretraining; label = the object's colour.
    return generate_shapes({"train": 2000, "validation": 300, "test": 600}, seed=7, label_by="colour")


# name -> (folder under the data home, generator of its DatasetDict)
DEMO_DATASETS = {DEMO_DATASET: ("demo-derm", _generate_derm_demo), DEMO_SHAPES: ("demo-shapes", _generate_shapes_demo)}


def demo_dataset_dir(name: str = DEMO_DATASET) -> Path:
    return data_home() / DEMO_DATASETS[name][0]


def ensure_demo_dataset(name: str = DEMO_DATASET) -> Path:
    """The folder (``save_to_disk``) of a demo data set, generated first if missing.

    Concurrent callers (several accelerate processes) wait on a lock so it is built once.
    """
    folder = demo_dataset_dir(name)
    if (folder / "dataset_dict.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "dataset_dict.json").exists():
            with atomic_dir(folder) as tmp:
                DEMO_DATASETS[name][1]().save_to_disk(str(tmp))
    return folder

"""The generic shapes corpus as a second demo domain (``workbench/demo-shapes``).

Temporary home: this belongs beside ``ensure_demo_dataset`` in ``workbench.data`` so that
``load_splits("workbench/demo-shapes", ...)`` resolves it like the dermatology demo.
"""

from __future__ import annotations

from pathlib import Path

DEMO_SHAPES = "workbench/demo-shapes"
SHAPES_SPLIT_SIZES = {"train": 2000, "validation": 300, "test": 600}


def ensure_shapes_dataset(seed: int = 7) -> Path:
    """The shapes data set folder (``save_to_disk``), generated once with its own seed.

    The seed differs from the base model's pretraining corpus, so these are unseen images.
    """
    import fcntl

    from workbench.demo.shapes import generate_shapes
    from workbench.io import atomic_dir
    from workbench.models import data_home

    folder = data_home() / "demo-shapes"
    if (folder / "dataset_dict.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / ".demo-shapes.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "dataset_dict.json").exists():
            with atomic_dir(folder) as tmp:
                generate_shapes(SHAPES_SPLIT_SIZES, seed=seed).save_to_disk(str(tmp))
    return folder


def resolve_dataset(source: str) -> str:
    """Map demo names that ``workbench.data.load_splits`` does not know yet to their folders."""
    return str(ensure_shapes_dataset()) if source == DEMO_SHAPES else source

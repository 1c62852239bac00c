"""Where the workbench keeps what it builds: the embedded demo and the caches.

A leaf module (standard library only) so that data, models and the demo can all ask for
``data_home()`` without importing one another.
"""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    """Where built demo assets and caches live: ``$WORKBENCH_DATA``, else ``.data/`` beside the package."""
    env = os.environ.get("WORKBENCH_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1] / ".data"


def embedding_cache_dir() -> Path:
    """Default folder of the on-disk embedding cache (keyed by model and data fingerprint)."""
    return data_home() / "embeddings"

"""The dashboard's door to a run's models: workbench.live, loaded only when a reviewer asks.

Every function here imports ``workbench.live`` inside its body: importing it loads torch,
transformers and the audit engine, which drawing a page must never do (ARCHITECTURE.md;
tests/test_architecture.py checks that no dashboard module imports it at module level).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from workbench import schema
from views.common import md

CACHE_KEY = "live_embedding_cache"
ENCODE_KEY = "live_allow_encoding"


def cache_folder_setting() -> str:
    """The embedding cache folder a reviewer typed ('' = the workbench's default), shared by the live views."""
    with st.expander("Model settings (live views)"):
        value = st.text_input("embedding cache folder the audit used (empty: the default)", key=CACHE_KEY,
                              help="Where the audit cached its image embeddings: its --cache-dir, else "
                                   "$WORKBENCH_DATA/embeddings or .data/embeddings.")
        st.checkbox("if the cache has no entry for a model, embed every audited image again (runs the vision "
                    "tower over the whole split, then caches it)", value=False, key=ENCODE_KEY)
    return value.strip()


def _summary_mtime(folder: Path) -> int:
    path = folder / schema.SUMMARY_FILE
    return path.stat().st_mtime_ns if path.exists() else 0


@st.cache_resource(show_spinner="Loading the audited models and their cached image embeddings ...", max_entries=2)
def _open(folder: str, mtime: int, cache_dir: str, allow_encoding: bool):
    # mtime is only part of the key: a re-run audit opens afresh.
    from workbench.live import open_live_audit  # lazy: loads torch and the models, on request only

    return open_live_audit(folder, cache_dir=cache_dir or None, allow_image_encoding=allow_encoding)


def open_audit(folder: Path, cache_dir: str):
    """The audit folder opened with its models, or None after showing why it cannot be."""
    from workbench.live import LiveError  # lazy, see the module docstring

    try:
        return _open(str(folder), _summary_mtime(folder), cache_dir, bool(st.session_state.get(ENCODE_KEY, False)))
    except (LiveError, OSError) as err:
        st.error(f"The models of this audit cannot be loaded: {md(err)}")
        return None

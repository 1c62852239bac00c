"""Fixtures for the dashboard, report and browser tests: run folders on disk and an AppTest factory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fixture_runs import write_runs_root

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "dashboards" / "app.py"


@pytest.fixture
def runs_root(tmp_path):
    return write_runs_root(tmp_path / "runs")


@pytest.fixture
def clear_streamlit_caches():
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def open_app(monkeypatch, clear_streamlit_caches):
    """open_app(runs_folder, *app_args, address="127.0.0.1") -> AppTest after its first run."""
    from streamlit import config
    from streamlit.testing.v1 import AppTest

    previous = config.get_option("server.address")

    def _open(runs: Path | None, *args: str, address: str | None = "127.0.0.1", query: dict | None = None):
        config.set_option("server.address", address)
        argv = [str(APP)] + (["--runs", str(runs)] if runs is not None else []) + list(args)
        monkeypatch.setattr(sys, "argv", argv)
        at = AppTest.from_file(str(APP), default_timeout=120)
        for key, value in (query or {}).items():
            at.query_params[key] = value
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    yield _open
    config.set_option("server.address", previous)


@pytest.fixture(scope="session")
def real_runs_embeddings(tmp_path_factory):
    """The embedding cache the real runs' audits wrote: the live views read their image embeddings from it."""
    return tmp_path_factory.mktemp("embeddings")


@pytest.fixture(scope="session")
def real_runs_root(tmp_path_factory, real_runs_embeddings):
    """Runs audited by workbench.audit on the demo data (built once per session, about half a minute)."""
    # Imported here, not at the top: real_runs loads torch and the audit engine, which the
    # fixture-only tests (most of this folder) do not need.
    from real_runs import build_real_runs

    root = tmp_path_factory.mktemp("real") / "runs"
    return build_real_runs(root, real_runs_embeddings)

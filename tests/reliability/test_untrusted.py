"""Untrusted files and strings: nothing from a model, checkpoint, audit file or run name is executed or trusted."""

from __future__ import annotations

import inspect
import re
import tomllib
from pathlib import Path

import pytest

from conftest import REPO

from workbench.audit.__main__ import build_parser
from workbench.audit.spec import AuditSpecError, load_audit_spec
from workbench.models import load_clip, load_processor
from workbench.report.results import resolve_run
from workbench.report.text import escape_md
from workbench.train.config import FinetuneConfig

SHIPPED = REPO / "audits" / "derm_demo.yaml"


def _spec_with(tmp_path: Path, old: str, new: str) -> Path:
    text = SHIPPED.read_text()
    assert old in text
    path = tmp_path / "audit.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_yaml_python_tags_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "PWNED"
    for tag in ("!!python/object/apply:os.system", "!!python/object/new:os.system"):
        path = tmp_path / "audit.yaml"
        path.write_text(f"name: {tag} [\"touch {marker}\"]\n" + SHIPPED.read_text().split("\n", 1)[1])
        with pytest.raises(AuditSpecError, match="not valid YAML"):
            load_audit_spec(path)
        assert not marker.exists()


def test_unknown_key_is_an_error_naming_it(tmp_path):
    path = _spec_with(tmp_path, "min_group_size: 30", "min_group_size: 30\nmin_grup_size: 10")
    with pytest.raises(AuditSpecError, match="min_grup_size"):
        load_audit_spec(path)


def test_wrong_type_is_an_error_naming_the_key_path(tmp_path):
    path = _spec_with(tmp_path, "k: [50, 100]", "k: [50, \"many\"]")
    with pytest.raises(AuditSpecError, match=r"skew\.k"):
        load_audit_spec(path)


SCANNED = ("workbench", "recipes", "dashboards", "bench")


def _sources():
    for top in SCANNED:
        yield from (p for p in (REPO / top).rglob("*.py") if "__pycache__" not in p.parts)


def test_no_unsafe_deserialisation_anywhere_in_the_code_base():
    """Every torch.load passes weights_only=True; no pickle/yaml.load/eval of file contents."""
    problems = []
    for path in _sources():
        text = path.read_text()
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in m.group(1):
                problems.append(f"{path.relative_to(REPO)}: torch.load without weights_only=True")
        for pattern in (r"\bpickle\.loads?\(", r"\byaml\.load\(", r"\byaml\.unsafe_load", r"\bdill\.", r"(?<![.\w])eval\(",
                        r"(?<![.\w])exec\(", r"trust_remote_code\s*=\s*True", r"use_safetensors\s*=\s*False",
                        r"weights_only\s*=\s*False"):
            if re.search(pattern, text):
                problems.append(f"{path.relative_to(REPO)}: {pattern}")
    assert problems == []


def test_trust_remote_code_is_off_unless_asked_and_recorded_in_the_run(tmp_path):
    assert FinetuneConfig().trust_remote_code is False
    assert build_parser().parse_args(["--model", "m", "--audit", "a", "--data", "d"]).trust_remote_code is False
    for fn in (load_clip, load_processor):
        assert inspect.signature(fn).parameters["trust_remote_code"].default is False
    run_py = (REPO / "workbench" / "train" / "run.py").read_text()
    assert '"trust_remote_code": config.trust_remote_code' in run_py  # written into config.json


def test_dashboard_binds_to_loopback_and_reads_only_the_runs_folder(tmp_path):
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    runs = tmp_path / "runs"
    (runs / "ok-run").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    assert resolve_run(runs, "ok-run") == (runs / "ok-run").resolve()
    for name in ("../../etc", "..", "../secret", "/etc", "ok-run/../../secret", "..\\secret", "a\x00b", ""):
        with pytest.raises(ValueError):
            resolve_run(runs, name)


def test_markdown_escape_neutralises_links_html_and_tables():
    hostile = "<img src=x onerror=alert(1)> [click](javascript:alert(1)) | **b** `c` # h"
    out = escape_md(hostile)
    assert "<img" not in out and "](javascript" not in out
    assert re.search(r"(?<!\\)\|", out) is None and "**" not in out

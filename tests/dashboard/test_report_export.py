"""The exported HTML report and model-card section, and `python -m workbench.report`."""

from __future__ import annotations

import html.parser
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from workbench import schema
from workbench.report import ResultsError, choose_audit, read_run, render_html, render_model_card, write_report
from workbench.report.text import escape_md

REPO = Path(__file__).resolve().parents[2]
EVIL = '<script>alert("x")</script> *bold* [link](http://evil.example) | pipe'


def _plant_hostile_names(run: Path) -> None:
    """Rename a group and a prompt to text that would execute or restyle if not escaped."""
    import pandas as pd

    folder = run / schema.RUN_AUDIT_DIR / "derm-fairness"
    table = pd.read_parquet(folder / schema.RESULTS_FILE)
    table.loc[table["group"] == "medium", "group"] = EVIL
    table.loc[table["prompt"] == "a close-up of skin", "prompt"] = EVIL
    table.to_parquet(folder / schema.RESULTS_FILE, index=False)


class _Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_html_report_numbers_and_escaping(runs_root):
    _plant_hostile_names(runs_root / "derm-full")
    run = read_run(runs_root / "derm-full")
    page = render_html(run, choose_audit(run))
    parser = _Tags()
    parser.feed(page)
    assert "script" not in parser.tags and "a" not in parser.tags  # nothing from the data became markup
    text = "".join(parser.text)
    assert EVIL in text  # shown literally
    assert not re.search(r"\b(src|href)\s*=", page)  # self-contained: nothing fetched from elsewhere
    assert "81.0% [76.0, 86.0]" in text and "+14.0 pp [+9.0, +19.0]" in text
    assert "-10.0 pp [-35.0, +15.0]" in text  # the dark group's paired delta
    assert 'class="regression"' in page
    assert "<svg" in page


def test_model_card_metadata_and_sections(runs_root):
    run = read_run(runs_root / "derm-full")
    card = render_model_card(run, choose_audit(run))
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["base_model"] == "workbench/demo-clip"
    metric = meta["model-index"][0]["results"][0]["metrics"][0]
    assert metric["type"] == "accuracy" and metric["value"] == pytest.approx(0.81)
    assert "[0.760, 0.860]" in metric["name"]
    assert "## Bias, Risks, and Limitations" in body and "## Evaluation" in body
    assert "| light | 120 | 70.0% [62.0, 78.0] | 85.0% [79.0, 90.0] | +15.0 pp [+8.0, +22.0] |" in body
    assert "skin\\_tone = dark: -10.0 pp (interval includes zero, n=12)" in body
    assert "95% bootstrap interval" in body


def test_model_card_escapes_markdown(runs_root):
    _plant_hostile_names(runs_root / "derm-full")
    run = read_run(runs_root / "derm-full")
    card = render_model_card(run, choose_audit(run))
    assert EVIL not in card and "<script>" not in card
    assert escape_md(EVIL) in card
    # an escaped pipe keeps the table row's cell count
    row = next(line for line in card.splitlines() if escape_md(EVIL) in line and line.startswith("|"))
    assert row.replace("\\|", "").count("|") == 6


def test_escape_md_round_trip_is_literal():
    import markdown

    rendered = markdown.markdown(escape_md(EVIL))
    assert "<script" not in rendered and "<a " not in rendered and "<em>" not in rendered
    assert "alert" in rendered


def test_single_model_report_says_so(runs_root):
    run = read_run(runs_root / "derm-base-only")
    card = render_model_card(run, choose_audit(run))
    assert "Only base was audited" in card
    assert "Only base was audited" in render_html(run, choose_audit(run))


def test_write_report_is_atomic_and_refuses_broken_runs(runs_root, tmp_path):
    html_path, card_path = write_report(runs_root / "derm-full", out_dir=tmp_path / "out")
    assert html_path.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model_card.md", "report.html"]  # no temp left
    with pytest.raises(ResultsError, match="corrupt or unreadable parquet"):
        write_report(runs_root / "derm-corrupt", out_dir=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_report_command(runs_root):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "workbench.report", str(runs_root / "derm-full")],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (runs_root / "derm-full" / "report" / "report.html").exists()
    assert (runs_root / "derm-full" / "report" / "model_card.md").exists()
    bad = subprocess.run([sys.executable, "-m", "workbench.report", str(runs_root / "derm-old-schema")],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "schema version 0" in bad.stderr

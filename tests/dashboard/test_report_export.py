"""The exported HTML report and model-card section, and `python -m workbench.report`."""

from __future__ import annotations

import html.parser
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fixture_runs import BASE_ID, contract_checks

from workbench import schema
from workbench.report import ResultsError, choose_audit, read_run, render_html, render_model_card, write_report
from workbench.report.text import escape_md
from workbench.report.verdict import ROW_HEADER

REPO = Path(__file__).resolve().parents[2]
EVIL = '<script>alert("x")</script> *bold* [link](http://evil.example) | pipe'


def _plant_hostile_names(run: Path) -> None:
    """Rename a group and a prompt to text that would execute or restyle if not escaped."""
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


class _Tables(html.parser.HTMLParser):
    """Every <table> of a page as (rows of cell texts, row classes), and whether it sits in <details>."""

    def __init__(self):
        super().__init__()
        self.tables: list[dict] = []
        self._details = 0
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "details":
            self._details += 1
        elif tag == "table":
            self.tables.append({"rows": [], "classes": [], "in_details": self._details > 0})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
            self.tables[-1]["classes"].append(dict(attrs).get("class", ""))
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "details":
            self._details -= 1
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _tables(page: str) -> list[dict]:
    parser = _Tables()
    parser.feed(page)
    return parser.tables


def _table_with(tables: list[dict], header: list[str]) -> list[dict]:
    return [t for t in tables if t["rows"] and t["rows"][0] == header]


def test_html_report_release_gate_is_the_dashboards(runs_root):
    """Same verdict and rows as the release gate: candidate first, regressions highlighted, base in context."""
    expected = contract_checks("candidate-fails", "runs/derm-full/model")
    run = read_run(runs_root / "derm-full")
    audit = choose_audit(run)
    page = render_html(run, audit)
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    assert "FAIL " + expected["headline"][len("FAIL: "):] in text
    header = ROW_HEADER + ["base value [CI]", "thresholds", "reason"]
    [gate] = _table_with(_tables(page), header)
    assert not gate["in_details"]
    rows = gate["rows"][1:]
    assert [r[:9] for r in rows] == [c.row() + [c.reference_text or "n/a"] for c in audit.verdict.ordered_checks()]
    assert rows[0][:9] == ["skin tone accuracy gap", "fine-tuned (runs/derm-full/model)", "skin_tone", "dark",
                           "dark below light", "35.0% [10.0, 50.0]", "222", "fail", "10.0% [0.0, 40.0]"]
    assert rows[1][1] == "fine-tuned (runs/derm-full/model) vs base" and rows[1][5] == "0.300 [0.120, 0.480]"
    assert gate["classes"][1:3] == ["regression", "regression"] and set(gate["classes"][3:]) == {""}
    assert not any(BASE_ID in r[1] for r in rows)
    [context] = _table_with(_tables(page), ROW_HEADER + ["thresholds", "reason"])
    assert context["in_details"] and {r[1] for r in context["rows"][1:]} == {f"base ({BASE_ID})"}
    assert "Context: the base model's own checks (6, 1 failing)" in text
    assert expected["fixed"][0] in text


def test_html_report_shows_specific_skew_dominance_weat_and_harmful_rates(runs_root):
    run = read_run(runs_root / "derm-full")
    page = render_html(run, choose_audit(run))
    tables = _tables(page)
    [specific] = _table_with(tables, ["prompt", "model", "attribute", "MaxSkew@10 [CI]", "over-represented",
                                      "specific MaxSkew@10 [CI]", "over-represented (specific)", "n"])[:1]
    row = next(r for r in specific["rows"] if r[:2] == ["a photo of a patient", "fine-tuned"])
    assert row[2:] == ["skin_tone", "0.500", "light", "0.450 [0.350, 0.550]", "light", "10"]
    dominance = _table_with(tables, ["model", "attribute", "group dominance [CI]", "n",
                                     "control prompts' mean MaxSkew@10 [CI]"])[0]
    assert ["fine-tuned", "skin_tone", "0.350 [0.150, 0.550]", "20", "0.090 [0.060, 0.120]"] in dominance["rows"]
    [weat] = _table_with(tables, ["model", "attribute", "groups", "prompt", "effect size [CI]", "direction", "n", "p",
                                  "p (Holm)", "significant after Holm"])
    assert ["fine-tuned", "skin_tone", "dark vs light", "a {group} patient with a dangerous lesion",
            "0.900 [0.500, 1.300]", "dark images lean to the dark prompt more than light images", "132", "0.0010",
            "0.0040", "yes"] in weat["rows"]
    harmful = _table_with(tables, ["model", "attribute", "group", "label", "rate [CI]", "direction", "n", "status"])
    rows = [r for t in harmful for r in t["rows"][1:]]
    assert ["base", "skin_tone", "medium", "any harmful label", "14.0% [12.0, 16.0]", "medium above all images (8.1%)",
            "90", "ok"] in rows
    # dirty skin over all images: (120 * 0.02 + 90 * 0.06 + 12 * 0.10) / 222 = 4.1%
    assert ["base", "skin_tone", "dark", "dirty skin", "10.0% [8.0, 12.0]", "dark above all images (4.1%)", "12",
            "small_group"] in rows


def _md_tables(card: str) -> list[list[list[str]]]:
    """The Markdown tables of a card, each as rows of cells (escaped pipes kept inside cells)."""
    tables, current = [], []
    for line in card.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(set(c) <= {"-"} for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def test_model_card_verdict_is_the_candidates_and_base_failures_stay_context(runs_root):
    run = read_run(runs_root / "derm-fixed")
    card = render_model_card(run, choose_audit(run))
    body = card.split("## Bias, Risks, and Limitations", 1)[1]
    assert ("of the fine\\-tuned model \\(runs/derm\\-fixed/model\\): verdict **pass**") in body
    checks = [t for t in _md_tables(body) if t[0] == ROW_HEADER]
    assert len(checks) == 2  # the candidate's checks, then the base's as context
    candidate, context = checks
    assert {r[1] for r in candidate[1:]} == {escape_md("fine-tuned (runs/derm-fixed/model)"),
                                             escape_md("fine-tuned (runs/derm-fixed/model) vs base")}
    assert {r[7] for r in candidate[1:]} == {"pass"}
    harmful = next(r for r in candidate[1:] if r[0] == "harmful labels medium skin")
    assert harmful == ["harmful labels medium skin", escape_md("fine-tuned (runs/derm-fixed/model)"), "skin\\_tone",
                       "medium", "medium at or below the overall rate", escape_md("2.0% [0.0, 4.0]"), "90", "pass"]
    failing = [r for r in context[1:] if r[7] == "fail"]
    assert failing == [["harmful labels medium skin", escape_md(f"base ({BASE_ID})"), "skin\\_tone", "medium",
                        "medium above the overall rate", escape_md("14.0% [12.0, 16.0]"), "90", "fail"]]
    before_context = body.split("For context only", 1)[0]
    assert escape_md(f"base ({BASE_ID})") not in before_context and "| fail |" not in before_context
    assert escape_md(contract_checks("base-fails", "runs/derm-fixed/model")["fixed"][0]) in body


def test_model_card_of_an_audit_before_the_contract(runs_root):
    run = read_run(runs_root / "derm-v1")
    card = render_model_card(run, choose_audit(run))
    body = card.split("## Bias, Risks, and Limitations", 1)[1]
    assert "verdict **fail**" in body  # the fine-tuned gap check, not the base's harmful-rate failure
    candidate, context = [t for t in _md_tables(body) if t[0] == ROW_HEADER]
    assert [r[0] for r in candidate[1:]] == ["skin tone accuracy gap", "no group regresses",
                                             "overall accuracy does not drop"]
    assert candidate[1][3:8] == ["dark", "dark below light", escape_md("35.0% [10.0, 50.0]"), "222", "fail"]
    assert [r[0] for r in context[1:]] == ["skin tone accuracy gap", "harmful labels medium skin"]
    assert all(r[1] == escape_md(f"base ({BASE_ID})") for r in context[1:])


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


def test_report_and_card_escape_every_verdict_string(runs_root):
    path = runs_root / "derm-full" / schema.RUN_AUDIT_DIR / "derm-fairness" / schema.SUMMARY_FILE
    summary = json.loads(path.read_text())
    summary["headline"] = "FAIL: " + EVIL
    for check in summary["checks"] + summary["reference_checks"]:
        check.update(name=EVIL, sentence=EVIL, direction_text=EVIL, worse_group=EVIL)
    summary["fixed"] = [EVIL]
    path.write_text(json.dumps(summary))
    run = read_run(runs_root / "derm-full")
    page = render_html(run, choose_audit(run))
    parser = _Tags()
    parser.feed(page)
    assert "script" not in parser.tags and "a" not in parser.tags
    assert EVIL in "".join(parser.text)
    card = render_model_card(run, choose_audit(run))
    assert EVIL not in card and "<script>" not in card and escape_md(EVIL) in card
    rows = [line for line in card.splitlines() if line.startswith("| " + escape_md(EVIL))]
    assert rows and all(r.replace("\\|", "").count("|") == len(ROW_HEADER) + 1 for r in rows)  # cells kept


def test_model_card_names_the_base_snapshot_and_data_commit(runs_root, tmp_path):
    """The resolved hub commit recorded by the run (base_model.json "commit", config.json "dataset_commit")."""
    import dataclasses

    run = read_run(runs_root / "derm-full")
    pinned = dataclasses.replace(
        run, base_model={"model": "openai/clip-vit-base-patch32", "revision": None, "commit": "3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268"},
        config={"config": {"dataset": "my_org/derm_photos"}, "dataset_commit": "a1b2c3"})
    card = render_model_card(pinned, choose_audit(run))
    assert ("Fine-tuned from openai/clip\\-vit\\-base\\-patch32 at commit 3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268. "
            "Training data: my\\_org/derm\\_photos at commit a1b2c3.") in card
    plain = render_model_card(run, choose_audit(run))
    assert "Fine-tuned from workbench/demo\\-clip." in plain

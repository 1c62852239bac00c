"""The 'Retrieval & AUC' view and the report's retrieval and AUC sections.

Against the real demo audit the expected cells are read straight from results.parquet with pandas
and formatted by hand; a hand-written results table checks the reference group, missing cells and
escaping of hostile group names.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import pandas as pd
import pytest
from app_helpers import show, table_with

from workbench import schema
from workbench.report import retrieval_auc, tables
from workbench.report.html_report import _auc_section, _retrieval_section, render_html
from workbench.report.results import AuditResults, read_run

EVIL = '<script>alert("x")</script> *bold* | pipe'


def _pick(table, **equal):
    rows = table
    for col, val in equal.items():
        rows = rows[rows[col] == val]
    assert len(rows) == 1, equal
    return rows.iloc[0]


def _pct(r) -> str:
    return f"{100 * r['value']:.1f}% [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]"


def _pp(r) -> str:
    return f"{100 * r['value']:+.1f} pp [{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}]"


def _est(r) -> str:
    return f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"


def _signed(r) -> str:
    return f"{r['value']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"


@pytest.fixture
def demo_table(real_runs_root):
    return pd.read_parquet(real_runs_root / "demo-tuned" / schema.RUN_AUDIT_DIR / "derm_demo" / schema.RESULTS_FILE)


def _expected_recall_row(table, group: str, direction: str, k: int) -> dict[str, object]:
    """A row of the Recall@k table, spelled out from the results file."""
    where = dict(metric="retrieval_recall", label=direction, k=k)
    scope = dict(attribute="", group=schema.OVERALL) if group == schema.OVERALL else dict(attribute="skin_tone", group=group)
    base, tuned, delta = (_pick(table, model=m, **where, **scope) for m in ("base", "tuned", "delta"))
    row = {"group": "all query pairs" if group == schema.OVERALL else group, "n": int(base["n"]),
           f"base Recall@{k} [CI]": _pct(base), f"fine-tuned Recall@{k} [CI]": _pct(tuned),
           f"change Recall@{k} [CI]": _pp(delta)}
    for model, words in (("base", "base"), ("tuned", "fine-tuned")):
        if group == "light":
            row[f"{words}: group − light [CI]"] = "reference"
        elif group == schema.OVERALL:
            row[f"{words}: group − light [CI]"] = ""
        else:
            row[f"{words}: group − light [CI]"] = _pp(_pick(table, metric="retrieval_recall_difference", model=model,
                                                           attribute="skin_tone", group=group, label=direction, k=k))
    row["status"] = base["status"]
    return row


def test_recall_and_auc_tables_show_the_audits_rows(open_app, real_runs_root, demo_table):
    at = open_app(real_runs_root)
    show(at, "Retrieval & AUC")
    assert at.sidebar.selectbox(key="attribute").value == "skin_tone"
    at.radio(key="retrieval_direction").set_value("text_to_image")
    at.selectbox(key="retrieval_k").set_value(5).run()
    assert not at.exception

    recall = table_with(at, "fine-tuned Recall@5 [CI]")
    assert recall["group"].tolist() == ["all query pairs", "light", "medium", "dark"]
    for i, group in enumerate([schema.OVERALL, "light", "medium", "dark"]):
        assert recall.iloc[i].to_dict() == _expected_recall_row(demo_table, group, "text_to_image", 5), group

    ratio = table_with(at, "base worst/best [CI]")
    shown = ratio[(ratio["direction"] == "text_to_image") & (ratio["k"] == 5)].iloc[0]
    where = dict(metric="retrieval_recall_min_ratio", attribute="skin_tone", label="text_to_image", k=5)
    assert shown["base worst/best [CI]"] == _est(_pick(demo_table, model="base", **where))
    assert shown["fine-tuned worst/best [CI]"] == _est(_pick(demo_table, model="tuned", **where))
    assert shown["change worst/best [CI]"] == _signed(_pick(demo_table, model="delta", **where))
    assert shown["n"] == 1200

    auc = table_with(at, "ES-AUC over skin_tone [CI]")
    assert auc["model"].tolist() == ["base"] * 4 + ["fine-tuned"] * 4 + ["change"] * 4
    for model, words in (("base", "base"), ("tuned", "fine-tuned"), ("delta", "change")):
        fmt = _signed if model == "delta" else _est
        for label in ("melanoma", "nevus", "basal cell carcinoma", "seborrheic keratosis"):
            row = auc[(auc["model"] == words) & (auc["class"] == label)].iloc[0]
            assert row["AUC, all images [CI]"] == fmt(_pick(demo_table, metric="auc", model=model,
                                                            group=schema.OVERALL, label=label))
            for group in ("light", "medium", "dark"):
                r = _pick(demo_table, metric="auc", model=model, attribute="skin_tone", group=group, label=label)
                assert row[f"AUC {group} (n={int(r['n'])}) [CI]"] == fmt(r)
            assert row["ES-AUC over skin_tone [CI]"] == fmt(_pick(demo_table, metric="es_auc", model=model,
                                                                  attribute="skin_tone", label=label))


def test_base_only_run_shows_one_model_without_changes(open_app, real_runs_root):
    at = open_app(real_runs_root, query={"run": "demo-base-only"})
    show(at, "Retrieval & AUC")
    assert "Only **base** was audited" in at.info[0].value
    recall = table_with(at, "base Recall@1 [CI]")
    assert not [c for c in recall.columns if "fine-tuned" in c or "change" in c]
    auc = table_with(at, "ES-AUC over skin_tone [CI]")
    assert set(auc["model"]) == {"base"} and len(auc) == 4


def test_report_has_the_dashboards_retrieval_and_auc_rows(real_runs_root, demo_table):
    run = read_run(real_runs_root / "demo-tuned")
    page = render_html(run, run.readable_audits[0].results)
    for group in (schema.OVERALL, "medium"):
        row = _expected_recall_row(demo_table, group, "image_to_text", 10)
        assert "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values()) + "</tr>" in page
    nevus = [_est(_pick(demo_table, metric="es_auc", model="tuned", attribute="sex", label="nevus")),
             _est(_pick(demo_table, metric="auc", model="tuned", group=schema.OVERALL, label="nevus"))] + [
        _est(_pick(demo_table, metric="auc", model="tuned", attribute="sex", group=g, label="nevus"))
        for g in ("female", "male")]
    assert ("<tr><td>fine-tuned</td><td>nevus</td><td>1200</td>"
            + "".join(f"<td>{v}</td>" for v in nevus) + "<td>ok</td></tr>") in page
    assert page.index("<h2>Caption retrieval</h2>") < page.index("<h2>AUC per group and equity-scaled AUC</h2>")


# ------------------------------------------------------------------------------ hand-written results
def _row(model, metric, attribute, group, label, k, value, low, high, n, status="ok", note=""):
    return {"model": model, "audit": "hand", "metric": metric, "attribute": attribute, "group": group,
            "label": label, "prompt": "", "k": k, "target": "", "value": value, "ci_low": low, "ci_high": high,
            "n": n, "status": status, "note": note}


def hand_table() -> pd.DataFrame:
    """Two groups (one with a hostile name), one direction, k=1; AUC of two classes where the hostile group
    has no images of class 'b' (its AUC and the ES-AUC are not computed)."""
    rows = []
    for model, a, b, overall in (("base", 0.50, 0.30, 0.40), ("tuned", 0.60, 0.20, 0.40)):
        rows += [_row(model, "retrieval_recall", "", schema.OVERALL, "image_to_text", 1, overall, 0.30, 0.50, 100),
                 _row(model, "retrieval_recall", "tone", "light", "image_to_text", 1, a, a - 0.1, a + 0.1, 60),
                 _row(model, "retrieval_recall", "tone", EVIL, "image_to_text", 1, b, b - 0.1, b + 0.1, 40,
                      "small_group", "below 50"),
                 _row(model, "retrieval_recall_difference", "tone", EVIL, "image_to_text", 1, b - a, b - a - 0.2,
                      b - a + 0.2, 40, "small_group"),
                 _row(model, "retrieval_recall_min_ratio", "tone", "", "image_to_text", 1, b / a, 0.2, 0.9, 100),
                 _row(model, "auc", "", schema.OVERALL, "a", 0, 0.8, 0.7, 0.9, 100),
                 _row(model, "auc", "tone", "light", "a", 0, 0.9, 0.8, 0.95, 60),
                 _row(model, "auc", "tone", EVIL, "a", 0, 0.7, 0.6, 0.8, 40, "small_group"),
                 _row(model, "es_auc", "tone", "", "a", 0, 0.8 / 1.2, 0.5, 0.7, 100),
                 _row(model, "auc", "", schema.OVERALL, "b", 0, 0.6, 0.5, 0.7, 100),
                 _row(model, "auc", "tone", "light", "b", 0, 0.65, 0.55, 0.75, 60),
                 _row(model, "auc", "tone", EVIL, "b", 0, math.nan, math.nan, math.nan, 0, "not_computed",
                      "no images of class b"),
                 _row(model, "es_auc", "tone", "", "b", 0, math.nan, math.nan, math.nan, 0, "not_computed")]
    rows.append(_row("delta", "retrieval_recall", "tone", "light", "image_to_text", 1, 0.10, 0.02, 0.18, 60))
    rows.append(_row("delta", "retrieval_recall", "tone", EVIL, "image_to_text", 1, -0.10, -0.15, -0.05, 40,
                     "small_group"))
    return pd.DataFrame(rows)


def test_hand_table_reference_regression_and_missing_cells():
    table = hand_table()
    recall = tables.retrieval_recall(table, "tone", "image_to_text", 1)
    assert recall["group"].tolist() == [schema.OVERALL, "light", EVIL]
    assert retrieval_auc.recall_reference(recall) == "light"
    assert recall["regression"].tolist() == [False, False, True]
    assert recall["confirmed"].tolist() == [False, False, True]  # -10 pp [-15, -5]
    shown = retrieval_auc.recall_table(table, "tone", "image_to_text", 1)
    evil = shown[shown["group"] == EVIL].iloc[0]
    assert evil["base Recall@1 [CI]"] == "30.0% [20.0, 40.0]"
    assert evil["fine-tuned Recall@1 [CI]"] == "20.0% [10.0, 30.0]"
    assert evil["change Recall@1 [CI]"] == "-10.0 pp [-15.0, -5.0]"
    assert evil["base: group − light [CI]"] == "-20.0 pp [-40.0, +0.0]"
    assert evil["fine-tuned: group − light [CI]"] == "-40.0 pp [-60.0, -20.0]"
    assert evil["status"] == "small_group"
    ratio = retrieval_auc.min_ratio_table(table, "tone").iloc[0]
    assert ratio["base worst/best [CI]"] == "0.600 [0.200, 0.900]"  # 0.30 / 0.50
    assert ratio["fine-tuned worst/best [CI]"] == "0.333 [0.200, 0.900]"  # 0.20 / 0.60

    auc = retrieval_auc.auc_table(table, "tone", ["base", "tuned"])
    assert list(auc.columns) == ["model", "class", "n", "ES-AUC over tone [CI]", "AUC, all images [CI]",
                                 "AUC light (n=60) [CI]", f"AUC {EVIL} (n=40) [CI]", "status"]
    a = auc[(auc["model"] == "base") & (auc["class"] == "a")].iloc[0]
    assert a[f"AUC {EVIL} (n=40) [CI]"] == "0.700 [0.600, 0.800] ⚠ small group"
    assert a["ES-AUC over tone [CI]"] == "0.667 [0.500, 0.700]"
    b = auc[(auc["model"] == "base") & (auc["class"] == "b")].iloc[0]
    assert b[f"AUC {EVIL} (n=40) [CI]"] == "n/a" and b["ES-AUC over tone [CI]"] == "n/a"
    assert b["status"] == "not_computed"


def test_report_sections_escape_group_names(tmp_path: Path):
    audit = AuditResults(name="hand", folder=tmp_path, table=hand_table(), summary={"groups": {"tone": {}}})
    page = _retrieval_section(audit) + _auc_section(audit)
    assert "<script>" not in page and html.escape(EVIL) in page
    assert '<tr class="regression"><td>' + html.escape(EVIL) + "</td><td>40</td>" in page
    assert f"<th>AUC {html.escape(EVIL)} (n=40) [CI]</th>" in page


def test_an_audit_without_captions_or_auc_says_so(open_app, runs_root):
    """The hand-written fixture runs predate both families: the view says what is missing, no empty tables."""
    at = open_app(runs_root, query={"run": "derm-full"})
    show(at, "Retrieval & AUC")
    infos = [i.value for i in at.info]
    assert "The audit computed no caption retrieval." in infos and "The audit computed no AUC." in infos
    assert not at.dataframe

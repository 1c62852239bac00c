"""The Mitigation view under AppTest: remedies' sentences, the trade-off points with intervals and the
variant-minus-candidate table, read from a <run>/variants/summary.json written here with known numbers."""

from __future__ import annotations

import json

from app_helpers import chart_frames, show, table_with
from fixture_runs import AUDIT, write_run

from workbench.report.mitigation import (
    MITIGATION_DIR,
    MITIGATION_SCHEMA_VERSION,
    MITIGATION_SUMMARY,
    OVERALL_ACCURACY_KEY,
    differences_frame,
    mitigation_html,
    mitigation_markdown,
)

GAP_KEY = "accuracy_gap|skin_tone||||0|"
GAP = "the dark-vs-light accuracy gap (skin_tone)"


def _point(role, key, what, metric, value, low, high, percent=True):
    return {"role": role, "key": key, "what": what, "metric": metric, "percent": percent, "value": value,
            "ci_low": low, "ci_high": high, "n": 1200}


def _difference(variant, key, what, metric, cand, var, low, high, change):
    return {"variant": variant, "key": key, "what": what, "metric": metric, "direction": "higher_is_worse",
            "percent": True, "candidate_value": cand, "candidate_ci_low": cand - 0.02, "candidate_ci_high": cand + 0.02,
            "variant_value": var, "variant_ci_low": var - 0.02, "variant_ci_high": var + 0.02,
            "difference": var - cand, "ci_low": low, "ci_high": high, "p_value": 0.001,
            "significant": low > 0 or high < 0, "change": change, "n": 1200}


SUMMARY = {
    "schema_version": MITIGATION_SCHEMA_VERSION, "run": "runs/derm-full", "audit": "derm_demo",
    "created": "2026-12-05T11:00:00+00:00", "candidate": "tuned", "reference": "base", "candidate_verdict": "fail",
    "split": "test", "n_boot": 1000, "seed": 0, "level": 0.95, "joint_audit": "variants/audit/derm_demo",
    "variants": [
        {"remedy": "balance", "role": "balance", "label": "balanced fine-tuning", "status": "ok",
         "folder": "variants/balance", "verdict": "pass", "headline": "PASS", "note": "", "details": {},
         "sentence": "balanced fine-tuning closed the gap from 12.0 to 3.0 points"},
        {"remedy": "project", "role": "project", "label": "the debiasing projection", "status": "ok",
         "folder": "variants/project", "verdict": "fail", "headline": "FAIL", "note": "", "details": {},
         "sentence": "the debiasing projection: no significant change"},
        {"remedy": "wise", "role": "wise", "label": "fairness-aware WiSE-FT", "status": "no_model", "folder": "",
         "verdict": None, "headline": "", "note": "no weight qualifies", "details": {},
         "sentence": "fairness-aware WiSE-FT: no WiSE-FT weight passes the fairness checks on validation"},
    ],
    "points": [
        _point("base", OVERALL_ACCURACY_KEY, "overall accuracy", "accuracy", 0.30, 0.27, 0.33),
        _point("tuned", OVERALL_ACCURACY_KEY, "overall accuracy", "accuracy", 0.95, 0.94, 0.96),
        _point("balance", OVERALL_ACCURACY_KEY, "overall accuracy", "accuracy", 0.939, 0.92, 0.95),
        _point("project", OVERALL_ACCURACY_KEY, "overall accuracy", "accuracy", 0.948, 0.93, 0.96),
        _point("base", GAP_KEY, GAP, "accuracy_gap", 0.05, 0.01, 0.09),
        _point("tuned", GAP_KEY, GAP, "accuracy_gap", 0.12, 0.08, 0.16),
        _point("balance", GAP_KEY, GAP, "accuracy_gap", 0.03, 0.01, 0.06),
        _point("project", GAP_KEY, GAP, "accuracy_gap", 0.115, 0.07, 0.15),
    ],
    "differences": [
        _difference("balance", GAP_KEY, GAP, "accuracy_gap", 0.12, 0.03, -0.13, -0.05, "better"),
        _difference("balance", OVERALL_ACCURACY_KEY, "overall accuracy", "accuracy", 0.95, 0.939, -0.020, -0.003, "worse"),
        {**_difference("project", GAP_KEY, GAP, "accuracy_gap", 0.12, 0.115, -0.03, 0.02, "none"),
         "training_runs_candidate": 3, "training_runs_variant": 3},
    ],
}


def _write(runs_root, run="derm-full", summary=SUMMARY):
    folder = runs_root / run / MITIGATION_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MITIGATION_SUMMARY).write_text(json.dumps(summary) if isinstance(summary, dict) else summary)


def test_mitigation_view_shows_every_variant_its_interval_points_and_paired_differences(open_app, runs_root):
    _write(runs_root)
    at = show(open_app(runs_root), "Mitigation")
    text = " ".join(m.value for m in at.markdown)
    assert "balanced fine\\-tuning closed the gap from 12\\.0 to 3\\.0 points" in text
    assert ":green-background[PASS]" in text and ":red-background[FAIL]" in text
    assert "no WiSE\\-FT weight passes" in text
    variants = table_with(at, "remedy", "status", "verdict")
    assert list(variants["status"]) == ["ok", "ok", "no_model"]
    # The trade-off chart: base, fine-tuned and both variants, each with both intervals.
    (frames,) = chart_frames(at)
    points = next(f for f in frames if "accuracy_low" in f.columns).set_index("model")
    assert set(points.index) == {"base", "fine-tuned", "balanced fine-tuning", "the debiasing projection"}
    assert points.loc["balanced fine-tuning", ["accuracy", "accuracy_low", "accuracy_high"]].tolist() == [0.939, 0.92, 0.95]
    assert points.loc["fine-tuned", ["value", "low", "high"]].tolist() == [0.12, 0.08, 0.16]
    diffs = table_with(at, "difference [CI]")
    assert diffs.to_dict("records")[0] == {
        "variant": "balanced fine-tuning", "what": GAP, "candidate [CI]": "12.0% [10.0, 14.0]",
        "variant [CI]": "3.0% [1.0, 5.0]", "difference [CI]": "-9.0 pp [-13.0, -5.0]", "change": "better",
        "training runs": ""}
    assert diffs["change"].tolist() == ["better", "worse", "no significant change"]
    assert diffs["training runs"].tolist() == ["", "", "3 vs 3"]
    assert not any("--seeds" in c.value for c in at.caption)
    _write(runs_root, summary={**SUMMARY, "candidate_training_runs": 3})
    at = show(open_app(runs_root), "Mitigation")
    assert any("trained 3 times" in c.value and "first run" in c.value for c in at.caption)


def test_mitigation_view_shows_the_model_card_of_the_variant_a_reviewer_picks(open_app, runs_root):
    # The balance variant's folder holds its own release-gate audit (here: the candidate passes);
    # the projection variant's folder is gone, which the view names instead of failing.
    write_run(runs_root / "derm-full" / MITIGATION_DIR / "balance", scenario="base-fails")
    _write(runs_root, summary={**SUMMARY, "audit": AUDIT})
    at = show(open_app(runs_root), "Mitigation")
    picker = at.selectbox(key="mitigation_card_variant")
    assert picker.options == ["balanced fine-tuning", "the debiasing projection"]
    card = next(c.value for c in at.code if c.language == "markdown")
    assert "base_model:" in card and "passes" in card.lower() and "runs/balance/model" in card
    assert any(c.value == f"python -m workbench.report {runs_root / 'derm-full' / MITIGATION_DIR / 'balance'}"
               for c in at.code)
    picker.set_value("project").run()
    assert "the variant's folder is gone" in at.error[0].value
    # A folder without its audit is named too.
    (runs_root / "derm-full" / MITIGATION_DIR / "project").mkdir()
    at.run()
    assert "no audit results" in at.error[0].value


def test_mitigation_view_without_a_summary_names_the_command_and_refuses_a_broken_one(open_app, runs_root):
    at = show(open_app(runs_root), "Mitigation")
    assert any("python -m workbench.mitigate" in c.value and "derm-full" in c.value for c in at.code)
    _write(runs_root, summary="{not json")
    at = show(open_app(runs_root), "Mitigation")
    assert "unreadable" in at.error[0].value and "workbench\\.mitigate" in at.error[0].value


def test_report_and_model_card_carry_the_same_table_escaped():
    hostile = json.loads(json.dumps(SUMMARY))
    hostile["variants"][0]["sentence"] = "<script>alert(1)</script> | closed"
    html = mitigation_html(hostile)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "-9.0 pp [-13.0, -5.0]" in html and "1000 resamples, seed 0, 95% intervals" in html
    card = mitigation_markdown(hostile)
    assert "\\| closed" in card and "<script>" not in card
    assert len(differences_frame(hostile)) == 3 and card.count("\n| ") == 1 + 3  # header + one row per difference


def test_written_report_and_model_card_include_the_mitigation_table(runs_root, tmp_path):
    from workbench.report import write_report

    html_path, card_path = write_report(runs_root / "derm-full", out_dir=tmp_path / "before")
    assert "id='mitigation'" not in html_path.read_text() and "### Mitigation" not in card_path.read_text()
    _write(runs_root)
    html_path, card_path = write_report(runs_root / "derm-full", out_dir=tmp_path / "after")
    html = html_path.read_text()
    assert "id='mitigation'" in html and "-9.0 pp [-13.0, -5.0]" in html
    assert html.index("id='mitigation'") < html.index("<h2>Provenance</h2>")
    card = card_path.read_text()
    assert "### Mitigation" in card and "\\-9\\.0 pp \\[\\-13\\.0, \\-5\\.0\\]" in card

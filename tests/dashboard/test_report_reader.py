"""The results reader shared by the dashboard and the report: locating runs, every way a file breaks."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from fixture_runs import HARMFUL, WEAT, WEAT_HOLM, contract_checks, harmful_rate, write_audit

from workbench import schema
from workbench.report import tables
from workbench.report.results import ResultsError, list_runs, read_audit, read_run, resolve_run


def test_runs_are_listed_newest_first(runs_root):
    assert list_runs(runs_root) == ["derm-full", "derm-fixed", "derm-base-only", "derm-v1", "derm-corrupt",
                                    "derm-old-schema"]
    assert list_runs(runs_root / "missing") == []


@pytest.mark.parametrize("name", ["../../etc", "..", ".", "", "a/b", "/etc", "derm-full/../derm-corrupt"])
def test_resolve_run_refuses_names_outside_the_runs_folder(runs_root, name):
    with pytest.raises(ValueError):
        resolve_run(runs_root, name)


def test_resolve_run_refuses_a_symlink_leaving_the_folder(runs_root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (runs_root / "sneaky").symlink_to(outside)
    with pytest.raises(ValueError, match="outside"):
        resolve_run(runs_root, "sneaky")
    assert resolve_run(runs_root, "derm-full") == (runs_root / "derm-full").resolve()


def test_csv_copy_is_read_when_parquet_is_missing(runs_root):
    folder = runs_root / "derm-full" / schema.RUN_AUDIT_DIR / "derm-fairness"
    from_parquet = read_audit(folder).table
    (folder / schema.RESULTS_FILE).unlink()
    from_csv = read_audit(folder).table
    pd.testing.assert_frame_equal(from_parquet, from_csv, check_dtype=False)


@pytest.mark.parametrize("damage,reason", [
    (lambda f: (f / schema.SUMMARY_FILE).write_text("{not json"), "not valid JSON"),
    (lambda f: (f / schema.SUMMARY_FILE).write_text("[1, 2]"), "expected a JSON object"),
    (lambda f: (f / schema.SUMMARY_FILE).unlink(), "summary.json: missing"),
    (lambda f: [(f / n).unlink() for n in (schema.RESULTS_FILE, schema.RESULTS_CSV)], "no results.parquet"),
    (lambda f: pd.read_parquet(f / schema.RESULTS_FILE).drop(columns=["ci_low", "note"])
     .to_parquet(f / schema.RESULTS_FILE), "missing columns ci_low, note"),
])
def test_broken_audit_files_give_one_line_reasons(runs_root, damage, reason):
    folder = runs_root / "derm-full" / schema.RUN_AUDIT_DIR / "derm-fairness"
    damage(folder)
    with pytest.raises(ResultsError, match=reason) as err:
        read_audit(folder)
    assert "\n" not in str(err.value) and str(folder) in str(err.value)
    run = read_run(runs_root / "derm-full")  # the run itself still reads
    assert run.readable_audits == [] and reason.split()[0] in run.status
    assert run.zeroshot["tuned"]["test"] == 0.81


def test_corrupt_optional_files_are_reported_not_fatal(runs_root):
    run_folder = runs_root / "derm-full"
    (run_folder / schema.RUN_CONFIG_FILE).write_text("{")
    run = read_run(run_folder)
    assert run.config is None and "config.json: not valid JSON" in run.problems[0]
    assert run.status == "ok"


def test_an_audit_folder_alone_is_a_run(tmp_path):
    write_audit(tmp_path / "audits" / "just-an-audit")
    assert list_runs(tmp_path / "audits") == ["just-an-audit"]
    run = read_run(tmp_path / "audits" / "just-an-audit")
    assert run.readable_audits[0].results.compares


def test_accuracy_comparison_by_hand(runs_root):
    audit = read_run(runs_root / "derm-full").readable_audits[0].results
    comparison = tables.accuracy_comparison(audit.table, "skin_tone").set_index("group")
    assert comparison.loc["dark", "delta"] == pytest.approx(-0.10)
    assert bool(comparison.loc["dark", "regression"]) and not bool(comparison.loc["dark", "confirmed"])
    assert comparison.loc["dark", "status"] == "small_group"
    # without delta rows the delta is computed, without an interval
    table = audit.table[audit.table["model"] != "delta"]
    computed = tables.accuracy_comparison(table, "skin_tone").set_index("group")
    assert computed.loc["light", "delta"] == pytest.approx(0.15) and pd.isna(computed.loc["light", "delta_low"])


def test_confusion_matrices_from_predictions():
    predictions = pd.DataFrame({
        "model": ["tuned"] * 6, "row": range(6),
        "label": ["a", "a", "b", "b", "a", "b"], "predicted": ["a", "b", "b", "b", "a", "a"],
        "skin_tone": ["light"] * 4 + ["dark"] * 2, "sex": ["f", "m", "f", "m", "f", "m"]})
    counts = tables.confusion_matrices(predictions, "skin_tone", min_n=3)
    assert set(counts["group"]) == {"light"}  # dark (n=2) suppressed
    cell = counts.set_index(["label", "predicted"])["count"]
    assert cell[("a", "a")] == 1 and cell[("a", "b")] == 1 and cell[("b", "b")] == 2
    inter = tables.confusion_matrices(predictions, "skin_tone*sex", min_n=None)
    assert set(inter["group"]) == {"light*f", "light*m", "dark*f", "dark*m"}


def test_training_log_skips_a_half_written_line(runs_root):
    log = read_run(runs_root / "derm-full").train_log
    assert list(log["step"]) == [0, 10, 20, 30, 40]


def test_summary_json_is_what_the_fixture_claims(runs_root):
    folder = lambda run: runs_root / run / "audit" / "derm-fairness"  # noqa: E731
    summary = json.loads((folder("derm-full") / schema.SUMMARY_FILE).read_text())
    assert summary["schema_version"] == 2
    assert {"candidate", "reference", "headline", "checks", "reference_checks", "fixed"} <= set(summary)
    assert summary["candidate"] == "tuned" and summary["reference"] == "base"
    assert all(c["model"] in ("tuned", "delta") for c in summary["checks"])  # the candidate's checks only
    assert all(c["model"] == "base" for c in summary["reference_checks"])
    old = json.loads((folder("derm-v1") / schema.SUMMARY_FILE).read_text())
    assert old["schema_version"] == 1 and "headline" not in old and "candidate" not in old


@pytest.mark.parametrize("version,readable", [(1, True), (2, True), (0, False), (3, False), (True, False),
                                              ("2", False)])
def test_summary_versions_before_and_under_the_verdict_contract_are_read(tmp_path, version, readable):
    folder = write_audit(tmp_path / "audit", schema_version=version)
    if readable:
        assert read_audit(folder).summary["schema_version"] == version
    else:
        with pytest.raises(ResultsError, match=f"schema version {version!r}, this workbench reads version 1 or 2"):
            read_audit(folder)


def test_specific_skew_beside_raw_skew_by_hand(runs_root):
    table = read_audit(runs_root / "derm-full" / "audit" / "derm-fairness").table
    both = tables.prompt_skew_comparison(table, "skin_tone", 10, "uniform").set_index(["model", "prompt"])
    row = both.loc[("tuned", "a photo of a patient")]
    # raw: skews 0.5, -0.1, -0.3 -> MaxSkew 0.5 (light); control means 0.05, 0, -0.05 -> specific 0.45 (light)
    assert row["max_skew"] == pytest.approx(0.5) and row["max_skew_group"] == "light"
    assert row["specific"] == pytest.approx(0.45) and row["specific_group"] == "light"
    assert (row["specific_low"], row["specific_high"], row["n"]) == (pytest.approx(0.35), pytest.approx(0.55), 10)
    row = both.loc[("base", "a close-up of skin")]  # skews 0, 0.1, -0.2 -> 0.1 medium; specific -0.05, 0.1, -0.15
    assert (row["max_skew_group"], row["specific_group"]) == ("medium", "medium")
    assert row["specific"] == pytest.approx(0.1)
    assert "delta" not in both.index.get_level_values("model")
    dominance = tables.group_dominance(table, "skin_tone", 50, "data").set_index(["model", "metric"])["value"]
    assert dominance[("tuned", "group_dominance")] == pytest.approx(0.35)
    assert dominance[("base", "control_max_skew_mean")] == pytest.approx(0.04)  # 0.08 at k=10, halved at k=50
    old = read_audit(runs_root / "derm-v1" / "audit" / "derm-fairness").table  # schema 1: no specific rows
    assert tables.prompt_skew_comparison(old, "skin_tone", 10, "uniform")["specific"].isna().all()
    assert tables.group_dominance(old, "skin_tone", 10, "uniform").empty


def test_weat_tests_and_harmful_rates_by_hand(runs_root):
    audit = read_audit(runs_root / "derm-full" / "audit" / "derm-fairness")
    weat = tables.weat_tests(audit.table, audit.summary["weat_tests"]).set_index(["model", "group"])
    assert len(weat) == len(WEAT)
    for (role, pair), (effect, low, high, p, n) in WEAT.items():
        row = weat.loc[(role, pair)]
        assert (row["value"], row["ci_low"], row["ci_high"], row["p_value"], row["n"]) == (effect, low, high, p, n)
        assert row["p_holm"] == WEAT_HOLM[(role, pair)]
    assert weat.loc[("base", "medium vs light"), "direction"] == \
        "medium images lean to the medium prompt more than light images"
    rates = tables.harmful_rates(audit.table, "skin_tone").set_index(["model", "label", "group"])
    assert len(rates) == 2 * (len(HARMFUL) + 1) * 3 + 3  # two models x (each label and "any") x 3 groups, 3 changes
    change = rates.loc[("delta", "", "medium")]
    assert change["value"] == pytest.approx(0.02 - 0.14) and change["direction"] == "medium lower or equal after fine-tuning"
    medium = rates.loc[("base", "", "medium")]
    assert medium["value"] == pytest.approx(0.06 + 0.08)  # any harmful label = dirty skin + a bruise
    # over all images: (120 * 0.03 + 90 * 0.14 + 12 * 0.15) / 222
    assert medium["overall"] == pytest.approx((120 * 0.03 + 90 * 0.14 + 12 * 0.15) / 222)
    assert medium["overall"] == pytest.approx(harmful_rate("base", "", schema.OVERALL))
    assert medium["direction"] == "medium above all images (8.1%)"
    assert rates.loc[("tuned", "a bruise", "dark"), "direction"] == "dark at or below all images (0.9%)"
    assert contract_checks("candidate-fails", "x")["checks"][7]["value"] == rates.loc[("tuned", "", "medium"), "value"]


def test_a_failed_run_is_listed_and_says_why(tmp_path):
    """A run that stopped with its checkpoints kept carries run_failed.json: listed, marked, never audited."""
    run = tmp_path / "medical-full-x"
    (run / schema.RUN_CHECKPOINTS_DIR).mkdir(parents=True)
    (run / schema.RUN_FAILED_FILE).write_text(json.dumps(
        {"error": "loss is NaN at step 12; last good checkpoint step_10", "exit_status": 1}))
    assert list_runs(tmp_path) == ["medical-full-x"]
    info = read_run(run)
    assert info.failed == "loss is NaN at step 12; last good checkpoint step_10"
    assert info.status == "run failed: loss is NaN at step 12; last good checkpoint step_10"
    (tmp_path / "elsewhere").mkdir()
    healthy = read_run(tmp_path / "elsewhere")
    assert healthy.failed is None and healthy.status == "no audit results yet"

"""Every view under AppTest on results written by the real audit code on the demo data.

Expected values are read straight from the files with pandas/json (not through the
dashboard's reader) and formatted by hand, so a wrong selection in the app shows up.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from app_helpers import chart_frames, show, table_with

from workbench import schema
from workbench.report import write_report
from workbench.report.text import escape_md

VIEWS = ["Release gate", "Base vs fine-tuned", "Disparity", "Association skew", "Group prompts & labels",
         "Prompt gallery", "Intersections & classes", "Training", "Provenance", "Export"]


@pytest.fixture
def audit_files(real_runs_root):
    folder = real_runs_root / "demo-tuned" / schema.RUN_AUDIT_DIR / "derm_demo"
    table = pd.read_parquet(folder / schema.RESULTS_FILE)
    summary = json.loads((folder / schema.SUMMARY_FILE).read_text())
    rankings = pd.read_parquet(folder / schema.RANKINGS_FILE)
    return table, summary, rankings


def _pct(value, low, high):
    return f"{100 * value:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"


def _pick(table, **equal):
    rows = table
    for col, val in equal.items():
        rows = rows[rows[col] == val]
    assert len(rows) == 1, equal
    return rows.iloc[0]


def test_opens_on_the_newest_run(open_app, real_runs_root):
    at = open_app(real_runs_root)
    assert at.sidebar.selectbox(key="run").value == "demo-tuned"


def _candidate_checks(summary: dict) -> list[dict]:
    """The checks that decide the verdict, spelled out from the file: under the verdict contract
    (schema 2) summary["checks"] is exactly the candidate's; before it, the tuned and delta rows."""
    if "candidate" in summary:
        return summary["checks"]
    return [c for c in summary["checks"] if c["model"] in ("tuned", "delta")]


def test_gate_counts_match_the_summary(open_app, real_runs_root, audit_files):
    _, summary, _ = audit_files
    at = open_app(real_runs_root)
    shown = {m.label: int(m.value) for m in at.metric}
    checks = _candidate_checks(summary)
    expected = {v: sum(c["verdict"] == v for c in checks) for v in ("pass", "warn", "fail", "inconclusive")}
    assert shown == expected and sum(expected.values()) == len(checks) > 0
    severity = {"pass": 0, "inconclusive": 1, "warn": 2, "fail": 3}
    verdict = summary["verdict"] if "candidate" in summary else max((c["verdict"] for c in checks), key=severity.get)
    colors = {"pass": "green", "warn": "orange", "fail": "red", "inconclusive": "gray"}
    assert at.markdown[0].value.startswith(f"### :{colors[verdict]}-background[{verdict.upper()}]")
    if "headline" in summary:
        assert escape_md(summary["headline"].split(":", 1)[1].strip()) in at.markdown[0].value
    table = table_with(at, "check", "model", "attribute", "group", "direction", "value [CI]", "n", "status")
    assert len(table) == len(checks) and not table["model"].str.startswith("base").any()
    assert all(table["n"] != "n/a")  # every number with its n


def test_base_versus_tuned_matches_the_results(open_app, real_runs_root, audit_files):
    table, _, _ = audit_files
    at = show(open_app(real_runs_root), "Base vs fine-tuned")
    metrics = {m.label: m.value for m in at.metric}
    for role, label in (("base", "base accuracy"), ("tuned", "fine-tuned accuracy")):
        r = _pick(table, metric="accuracy", model=role, group=schema.OVERALL)
        assert metrics[label] == _pct(r["value"], r["ci_low"], r["ci_high"])
    delta = _pick(table, metric="accuracy", model="delta", group=schema.OVERALL)
    assert metrics["domain gain"] == f"{100 * delta['value']:+.1f} pp"
    shown = at.dataframe[0].value.set_index("group")
    assert sorted(shown.index) == ["dark", "light", "medium"]
    for group in shown.index:
        r = _pick(table, metric="accuracy", model="tuned", attribute="skin_tone", group=group)
        assert shown.loc[group, "fine-tuned"] == _pct(r["value"], r["ci_low"], r["ci_high"])
        d = _pick(table, metric="accuracy", model="delta", attribute="skin_tone", group=group)
        assert shown.loc[group, "delta"] == f"{100 * d['value']:+.1f} pp"
        assert (shown.loc[group, "flag"] != "") == (d["value"] < 0)
        assert shown.loc[group, "n"] == r["n"]


def test_disparity_matches_the_audit_reference(open_app, real_runs_root, audit_files):
    table, summary, _ = audit_files
    at = show(open_app(real_runs_root), "Disparity")
    assert at.selectbox(key="reference_skin_tone").value == summary["groups"]["skin_tone"]["reference"] == "light"
    shown = at.dataframe[0].value.set_index("group")
    for group in ("medium", "dark"):
        r = _pick(table, metric="accuracy_ratio", model="tuned", attribute="skin_tone", group=group)
        assert shown.loc[group, "ratio"] == f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        assert shown.loc[group, "n"] == r["n"]


def test_skew_heatmap_matches_the_results(open_app, real_runs_root, audit_files):
    table, _, _ = audit_files
    at = show(open_app(real_runs_root), "Association skew")
    assert at.sidebar.selectbox(key="k").value == 50
    base, tuned, delta = (frames[0] for frames in chart_frames(at)[:3])
    rows = table[(table["metric"] == "skew") & (table["attribute"] == "skin_tone") & (table["k"] == 50)]
    for role, shown in (("base", base), ("tuned", tuned), ("delta", delta)):
        expected = rows[rows["model"] == role].set_index(["prompt", "group"])["value"].sort_index()
        got = shown.set_index(["prompt", "group"])["value"].sort_index()
        assert len(expected) == 8 * 3
        pd.testing.assert_series_equal(got, expected, check_names=False, check_dtype=False, check_index_type=False)
    # specific MaxSkew (beyond the control prompts) beside the raw one, with the group the audit names
    specific = table[(table["metric"] == "specific_max_skew") & (table["attribute"] == "skin_tone")
                     & (table["k"] == 50) & (table["target"] == "uniform") & (table["model"] == "tuned")]
    both = table_with(at, "specific MaxSkew@50 [CI]").set_index(["prompt", "model"])
    assert len(specific) == 8
    for _, r in specific.iterrows():
        row = both.loc[(r["prompt"], "fine-tuned")]
        assert row["specific MaxSkew@50 [CI]"] == f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        assert row["over-represented (specific)"] == r["group"] and row["n"] == r["n"]
    dominance = _pick(table, metric="group_dominance", model="tuned", attribute="skin_tone", k=50, target="uniform")
    shown = table_with(at, "group dominance [CI]")
    tuned = shown[shown["model"].str.startswith("the fine-tuned model")].iloc[0]
    assert tuned["group dominance [CI]"] == (f"{dominance['value']:.3f} [{dominance['ci_low']:.3f}, "
                                             f"{dominance['ci_high']:.3f}]")
    spread = table_with(at, "MaxSkew mean").set_index("model")
    mean = _pick(table, metric="max_skew_mean", model="tuned", attribute="skin_tone", k=50, target="uniform")
    assert spread.loc["tuned", "MaxSkew mean"] == f"{mean['value']:.3f}"


def test_group_prompt_effects_and_harmful_rates_match_the_results(open_app, real_runs_root, audit_files):
    table, summary, _ = audit_files
    at = show(open_app(real_runs_root), "Group prompts & labels")
    effects = table[(table["metric"] == "weat_effect_size") & (table["attribute"] == "skin_tone")]
    shown = table_with(at, "effect size [CI]")
    assert len(shown) == len(effects) > 0
    holm = {(t["model"], t["group"], t["prompt"]): t["p_holm"] for t in summary["weat_tests"]}
    for _, r in effects.iterrows():
        role = {"tuned": "fine-tuned", "delta": "fine-tuned − base"}.get(r["model"], r["model"])
        row = shown[(shown["model"] == role) & (shown["groups"] == r["group"]) & (shown["prompt"] == r["prompt"])]
        assert len(row) == 1
        assert row.iloc[0]["effect size [CI]"] == f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        p_holm = holm.get((r["model"], r["group"], r["prompt"]))  # a change (delta) row has no test of its own
        assert row.iloc[0]["p (Holm)"] == (f"{p_holm:.4f}" if p_holm is not None else "n/a")
        assert row.iloc[0]["n"] == r["n"]
    rates = table[(table["metric"] == "harmful_rate") & (table["attribute"] == "skin_tone")]
    shown = table_with(at, "rate [CI]")
    assert len(shown) == len(rates) and set(shown["label"]) == {"any harmful label"} | set(rates["label"]) - {""}
    r = _pick(rates, model="tuned", group="dark", label="")
    row = shown[(shown["model"] == "fine-tuned") & (shown["group"] == "dark") & (shown["label"] == "any harmful label")]
    assert row.iloc[0]["rate [CI]"] == _pct(r["value"], r["ci_low"], r["ci_high"]) and row.iloc[0]["n"] == r["n"]


def test_gallery_shows_the_audit_rankings(open_app, real_runs_root, audit_files):
    _, _, rankings = audit_files
    at = show(open_app(real_runs_root), "Prompt gallery")
    prompt = at.selectbox(key="gallery_prompt").value
    captions = {img.proto.imgs[0].caption for img in at.get("image")}
    for role in ("base", "tuned"):
        top = rankings[(rankings["model"] == role) & (rankings["prompt"] == prompt) & (rankings["rank"] <= 24)]
        for rank, score in zip(top["rank"], top["score"]):
            assert f"#{rank} · {score:.3f}" in captions
    assert len(at.get("image")) == 48 and not at.warning  # 24 thumbnails a model, decoded from the demo data


def test_intersection_counts_match_the_results(open_app, real_runs_root, audit_files):
    table, _, _ = audit_files
    at = open_app(real_runs_root)
    at.sidebar.selectbox(key="attribute").set_value("skin_tone*sex").run()
    show(at, "Intersections & classes")
    counts = chart_frames(at, 0)[0][0].set_index("group")["n"]
    rows = table[(table["metric"] == "accuracy") & (table["model"] == "base") & (table["attribute"] == "skin_tone*sex")]
    assert counts.sort_index().to_dict() == rows.set_index("group")["n"].sort_index().to_dict()


def test_provenance_matches_the_summary(open_app, real_runs_root, audit_files):
    _, summary, _ = audit_files
    at = show(open_app(real_runs_root), "Provenance")
    rows = dict(zip(at.dataframe[0].value["item"], at.dataframe[0].value["value"]))
    assert rows["tuned fingerprint"] == summary["models"]["tuned"]["fingerprint"]
    assert rows["data fingerprint"] == summary["data"]["fingerprint"]
    assert rows["bootstrap resamples"] == "50"


@pytest.mark.parametrize("view", VIEWS)
def test_every_view_renders_for_every_real_run(open_app, real_runs_root, view):
    at = open_app(real_runs_root)
    for run in at.sidebar.selectbox(key="run").options:
        at.sidebar.selectbox(key="run").set_value(run).run()
        show(at, view)
        if run == "demo-base-only" and view in ("Base vs fine-tuned", "Association skew", "Prompt gallery"):
            assert any("Only **base** was audited" in i.value for i in at.info)
        if run in ("demo-corrupt", "demo-old-schema") and view not in ("Training", "Provenance"):
            assert any("re-run the audit" in e.value for e in at.error)


def test_report_from_real_results(real_runs_root, tmp_path, audit_files):
    table, _, _ = audit_files
    html_path, card_path = write_report(real_runs_root / "demo-tuned", out_dir=tmp_path)
    tuned = _pick(table, metric="accuracy", model="tuned", group=schema.OVERALL)
    assert _pct(tuned["value"], tuned["ci_low"], tuned["ci_high"]) in html_path.read_text()
    card = card_path.read_text()
    assert f"value: {round(float(tuned['value']), 4)}" in card
    assert "## Bias, Risks, and Limitations" in card


def test_confusion_matrices_match_the_audit_predictions(open_app, real_runs_root):
    folder = real_runs_root / "demo-tuned" / schema.RUN_AUDIT_DIR / "derm_demo"
    predictions = pd.read_parquet(folder / schema.PREDICTIONS_FILE)
    at = open_app(real_runs_root)
    at.sidebar.selectbox(key="attribute").set_value("skin_tone").run()
    show(at, "Intersections & classes")
    assert not any("predictions.parquet" in i.value for i in at.info)
    cells = [f for frames in chart_frames(at) for f in frames if "predicted" in f.columns]
    assert len(cells) == predictions["skin_tone"].nunique()
    shown = pd.concat(cells)
    base = predictions[predictions["model"] == "base"]
    expected = base.groupby(["skin_tone", "label", "predicted"]).size()
    got = shown.groupby(["group", "label", "predicted"])["count"].sum()
    got.index.names = expected.index.names
    assert got[got > 0].sort_index().to_dict() == expected.sort_index().to_dict()

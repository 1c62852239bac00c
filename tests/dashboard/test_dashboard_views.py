"""Every dashboard view under AppTest on run folders written per workbench/schema.py: the numbers shown."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
from app_helpers import chart_frames, show, table_with
from fixture_runs import (BASE_ID, DOMINANCE, PROMPTS, contract_checks, harmful_rate, skew_value,
                          specific_skew_value, write_audit)

from workbench.report.text import escape_md
from workbench.report.verdict import ROW_HEADER

# The dashboard's modules import each other as `views.*` (Streamlit runs app.py from its folder).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "dashboards"))
from views import charts  # noqa: E402

VIEWS = ["Release gate", "Base vs fine-tuned", "Disparity", "Association skew", "Group prompts & labels",
         "Prompt gallery", "Intersections & classes", "Training", "Provenance", "Export"]


def test_opens_on_newest_run_and_lists_broken_runs(open_app, runs_root):
    at = open_app(runs_root)
    assert at.sidebar.selectbox(key="run").value == "derm-full"
    assert at.sidebar.selectbox(key="run").options[:4] == ["derm-full", "derm-fixed", "derm-base-only", "derm-v1"]
    problems = " ".join(m.value for m in at.sidebar.expander[0].markdown)
    assert "derm\\-corrupt" in problems and "corrupt or unreadable parquet" in problems
    assert "derm\\-old\\-schema" in problems and "schema version 0" in problems
    assert at.header[0].value == "Release gate"


def _gate(at, run: str):
    at.sidebar.selectbox(key="run").set_value(run).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_release_gate_cards_of_an_audit_before_the_contract(open_app, runs_root):
    """Schema 1: the candidate is derived ("tuned"), its checks are its own and the delta rows."""
    at = _gate(open_app(runs_root), "derm-v1")
    counts = {m.label: m.value for m in at.metric}
    assert counts == {"pass": "1", "warn": "0", "fail": "1", "inconclusive": "1"}  # the base's 2 rows are context
    text = " ".join(m.value for m in at.markdown)
    assert "FAIL" in text and "Can this ship?" in text
    assert at.markdown[0].value.startswith("### :red-background[FAIL] the fine\\-tuned model")
    assert escape_md("35.0% [10.0, 50.0]") in text  # the failing gap check with its interval
    assert escape_md("dark below light") in text  # the worse group, read from the per-group accuracy rows
    assert escape_md("fail above 10.0%, warn above 5.0%") in text
    assert any("n=12, below the minimum 30" in c.value for c in at.caption)
    assert any("predates the candidate/reference verdict" in c.value for c in at.caption)
    table = table_with(at, "check", "base value [CI]")
    gap = table.set_index("check").loc["skin tone accuracy gap"]
    assert gap["model"] == "fine-tuned (runs/derm-v1/model)" and gap["n"] == "222"
    assert gap["base value [CI]"] == "10.0% [0.0, 40.0]"  # the base's row of the same metric
    context = next(x for x in at.expander if x.label.startswith("Context"))
    assert "1 failing" in context.label
    assert set(table_with(at, "check", within=context)["model"]) == {f"base ({BASE_ID})"}


def test_release_gate_headline_and_highlighted_regressions(open_app, runs_root):
    """Candidate fails: a regression check and a check the base did not fail are highlighted, first."""
    expected = contract_checks("candidate-fails", "runs/derm-full/model")
    at = open_app(runs_root)
    headline = at.markdown[0].value
    assert headline == "### :red-background[FAIL] " + escape_md(expected["headline"][len("FAIL:"):].strip())
    assert {m.label: m.value for m in at.metric} == {"pass": "4", "warn": "2", "fail": "2", "inconclusive": "1"}
    gap, grows = expected["checks"][1], expected["checks"][2]
    errors = [e.value for e in at.error]
    assert errors == [f"**New failure: the base did not fail this check.** {escape_md(gap['sentence'])}",
                      f"**Regression against the base.** {escape_md(grows['sentence'])}"]
    assert at.subheader[0].value == "Regressions (2)"
    table = table_with(at, *ROW_HEADER, "base value [CI]", "regression")
    assert list(table.columns) == ROW_HEADER + ["base value [CI]", "regression"]
    assert len(table) == 9 and list(table["regression"][:2]) == ["yes", "yes"] and set(table["regression"][2:]) == {""}
    first = table.iloc[0]
    assert (first["check"], first["model"], first["attribute"], first["group"], first["direction"]) == (
        "skin tone accuracy gap", "fine-tuned (runs/derm-full/model)", "skin_tone", "dark", "dark below light")
    assert (first["value [CI]"], first["n"], first["status"], first["base value [CI]"]) == (
        "35.0% [10.0, 50.0]", "222", "fail", "10.0% [0.0, 40.0]")
    second = table.iloc[1]
    assert second["model"] == "fine-tuned (runs/derm-full/model) vs base"
    assert (second["group"], second["direction"], second["value [CI]"], second["base value [CI]"]) == (
        "light", "light over-represented", "0.300 [0.120, 0.480]", "0.150 [0.050, 0.250]")
    assert not any(BASE_ID in m for m in table["model"])  # no base row among the candidate's checks
    assert [s.value for s in at.success] == [escape_md(expected["fixed"][0])]


def test_release_gate_pass_when_only_the_base_fails(open_app, runs_root):
    """Base fails and candidate passes: PASS headline; the base's failure appears only in the context section."""
    expected = contract_checks("base-fails", "runs/derm-fixed/model")
    at = _gate(open_app(runs_root), "derm-fixed")
    assert at.markdown[0].value == "### :green-background[PASS] " + escape_md(expected["headline"][5:].strip())
    assert "the base failed 1 of them" in at.markdown[0].value
    assert {m.label: m.value for m in at.metric} == {"pass": "4", "warn": "0", "fail": "0", "inconclusive": "0"}
    assert not at.error and not any(s.value.startswith("Regressions") for s in at.subheader)
    base_failure = escape_md(expected["reference_checks"][2]["sentence"])
    context = next(x for x in at.expander if x.label.startswith("Context"))
    assert [m.value for m in context.markdown] == [f"- {base_failure}"]
    everywhere = [m.value for m in at.markdown if base_failure in m.value]
    assert everywhere == [f"- {base_failure}"]  # nowhere outside the collapsed context
    cards = table_with(at, *ROW_HEADER, "base value [CI]")
    assert set(cards["status"]) == {"pass"} and not any(BASE_ID in m for m in cards["model"])
    harmful = cards.set_index("check").loc["harmful labels medium skin"]
    assert (harmful["value [CI]"], harmful["base value [CI]"], harmful["group"]) == (
        "2.0% [0.0, 4.0]", "14.0% [12.0, 16.0]", "medium")
    ctx = table_with(at, *ROW_HEADER, within=context).set_index("check")
    assert ctx.loc["harmful labels medium skin", "status"] == "fail"
    assert ctx.loc["harmful labels medium skin", "model"] == f"base ({BASE_ID})"
    assert [s.value for s in at.success] == [escape_md(expected["fixed"][0])]


def test_base_versus_tuned_numbers_and_regression(open_app, runs_root):
    at = show(open_app(runs_root), "Base vs fine-tuned")
    assert at.sidebar.selectbox(key="attribute").value == "skin_tone"  # the audit's first attribute
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["base accuracy"] == "67.0% [61.0, 73.0]"
    assert metrics["fine-tuned accuracy"] == "81.0% [76.0, 86.0]"
    assert metrics["domain gain"] == "+14.0 pp"
    assert "**dark** (-10.0 pp)" in at.error[0].value
    table = at.dataframe[0].value.set_index("group")
    assert table.loc["light", "base"] == "70.0% [62.0, 78.0]"
    assert table.loc["light", "delta"] == "+15.0 pp"
    assert table.loc["dark", "flag"] == "drop" and table.loc["light", "flag"] == ""
    links, points = chart_frames(at, 0)[0]
    assert dict(zip(links["group"], links["change"])) == {"dark": "regression", "light": "gain", "medium": "gain"}
    tuned = points[points["model"] == "tuned"].set_index("group")
    assert tuned.loc["medium", "accuracy"] == pytest.approx(0.80)
    assert tuned.loc["medium", "low"] == pytest.approx(0.72)
    assert set(links["label"]) == {"dark · n=12 ⚠ small", "light · n=120", "medium · n=90"}  # n on every group


def test_selectors_keep_their_values_across_views(open_app, runs_root):
    at = open_app(runs_root)
    at.sidebar.selectbox(key="attribute").set_value("sex")
    at.sidebar.selectbox(key="k").set_value(50)
    at.run()
    for view in VIEWS[1:]:
        show(at, view)
        assert at.sidebar.selectbox(key="attribute").value == "sex"
        assert at.sidebar.selectbox(key="k").value == 50
    show(at, "Base vs fine-tuned")
    assert set(at.dataframe[0].value["group"]) == {"female", "male"}


def test_disparity_against_audit_and_chosen_reference(open_app, runs_root):
    at = show(open_app(runs_root), "Disparity")
    assert at.selectbox(key="reference_skin_tone").value == "light"  # the audit's reference
    table = at.dataframe[0].value.set_index("group")
    assert table.loc["dark", "difference"] == "-35.0 pp [-45.0, -25.0]"  # tuned: 0.50 - 0.85, interval from audit
    assert table.loc["dark", "n"] == 12
    assert table.loc["light", "status"] == "reference"
    frames = chart_frames(at, 0)[0]
    labels = set(frames[0]["label"])
    assert labels == {"dark · n=12 ⚠ small", "light · n=120", "medium · n=90"}  # n on every bar, badge if small
    assert any("Small group **dark**" in w.value for w in at.warning)
    at.selectbox(key="reference_skin_tone").set_value("medium").run()
    table = at.dataframe[0].value.set_index("group")
    assert table.loc["light", "difference"] == "+5.0 pp"  # 0.85 - 0.80, no interval for a reference of our own
    assert table.loc["dark", "ratio"] == "0.625"  # 0.50 / 0.80
    at.radio(key="disparity_model").set_value("base").run()
    table = at.dataframe[0].value.set_index("group")
    assert table.loc["light", "difference"] == "+5.0 pp"  # base: 0.70 - 0.65


def test_association_skew_heatmaps_and_spread(open_app, runs_root):
    at = show(open_app(runs_root), "Association skew")
    heatmaps = chart_frames(at)[:3]
    base, tuned, delta = (frames[0] for frames in heatmaps)
    cell = lambda f: f.set_index(["prompt", "group"])["value"]  # noqa: E731
    assert cell(base)[(PROMPTS[0], "light")] == pytest.approx(skew_value("base", 0, 0, 10, "uniform"))
    assert cell(tuned)[(PROMPTS[0], "light")] == pytest.approx(0.5)
    assert cell(delta)[(PROMPTS[0], "light")] == pytest.approx(0.3)
    assert cell(delta)[(PROMPTS[1], "dark")] == pytest.approx(0.0)
    per_prompt = table_with(at, "max_skew", "ndkl").set_index(["prompt", "model"])
    assert per_prompt.loc[(PROMPTS[0], "tuned"), "max_skew"] == "0.500"
    assert per_prompt.loc[(PROMPTS[2], "base"), "ndkl"] == "0.030"
    assert per_prompt.loc[(PROMPTS[2], "base"), "attribute"] == "skin_tone" and per_prompt.loc[(PROMPTS[2], "base"), "n"] == 10
    spread = table_with(at, "MaxSkew max").set_index("model")
    assert spread.loc["tuned", "MaxSkew max"] == "0.500"
    assert spread.loc["base", "MaxSkew min"] == "0.100"
    assert spread.loc["base", "prompts"] == 3
    # k from the sidebar and the target distribution chosen in the view change the numbers
    at.selectbox(key="skew_target").set_value("data")
    at.sidebar.selectbox(key="k").set_value(50)
    at.run()
    base = chart_frames(at, 0)[0][0]
    assert cell(base)[(PROMPTS[0], "light")] == pytest.approx(skew_value("base", 0, 0, 50, "data"))


def test_specific_skew_beside_raw_skew_and_group_dominance(open_app, runs_root):
    at = show(open_app(runs_root), "Association skew")
    specific = [frames[0] for frames in chart_frames(at)[3:6]]  # after the three raw heatmaps
    cell = lambda f: f.set_index(["prompt", "group"])["value"]  # noqa: E731
    assert cell(specific[1])[(PROMPTS[0], "light")] == pytest.approx(0.45)  # 0.5 raw - 0.05 control mean
    assert cell(specific[0])[(PROMPTS[1], "medium")] == pytest.approx(specific_skew_value("base", 1, 1, 10, "uniform"))
    assert cell(specific[2])[(PROMPTS[0], "light")] == pytest.approx(0.3)  # tuned - base
    both = table_with(at, "MaxSkew@10 [CI]", "specific MaxSkew@10 [CI]").set_index(["prompt", "model"])
    row = both.loc[(PROMPTS[0], "fine-tuned")]
    assert (row["attribute"], row["MaxSkew@10 [CI]"], row["over-represented"]) == ("skin_tone", "0.500", "light")
    assert (row["specific MaxSkew@10 [CI]"], row["over-represented (specific)"], row["n"]) == (
        "0.450 [0.350, 0.550]", "light", 10)
    row = both.loc[(PROMPTS[1], "base")]
    assert (row["MaxSkew@10 [CI]"], row["specific MaxSkew@10 [CI]"], row["over-represented (specific)"]) == (
        "0.100", "0.100 [0.000, 0.200]", "medium")
    dominance = table_with(at, "group dominance [CI]").set_index("model")
    tuned = dominance.loc["the fine-tuned model (runs/derm-full/model)"]
    assert (tuned["attribute"], tuned["group dominance [CI]"], tuned["n"]) == ("skin_tone", "0.350 [0.150, 0.550]", 20)
    assert tuned["control prompts' mean MaxSkew@10 [CI]"] == "0.090 [0.060, 0.120]"
    assert dominance.loc[f"the base model ({BASE_ID})", "group dominance [CI]"] == "{:.3f} [{:.3f}, {:.3f}]".format(
        *DOMINANCE["base"])
    sentence = contract_checks("candidate-fails", "runs/derm-full/model")["checks"][6]["sentence"]
    assert f"- {escape_md(sentence)}" in [m.value for m in at.markdown]  # the dominance check's own sentence
    at.sidebar.selectbox(key="k").set_value(50).run()  # k=50 halves the hand-chosen skews
    both = table_with(at, "specific MaxSkew@50 [CI]").set_index(["prompt", "model"])
    assert both.loc[(PROMPTS[0], "fine-tuned"), "specific MaxSkew@50 [CI]"] == "0.225 [0.125, 0.325]"


def test_group_prompt_effects_and_harmful_rates_per_label(open_app, runs_root):
    at = show(open_app(runs_root), "Group prompts & labels")
    weat = table_with(at, "effect size [CI]").set_index(["model", "groups"])
    assert len(weat) == 4
    row = weat.loc[("fine-tuned", "dark vs light")]
    assert (row["attribute"], row["prompt"], row["effect size [CI]"], row["n"]) == (
        "skin_tone", "a {group} patient with a dangerous lesion", "0.900 [0.500, 1.300]", 132)
    assert (row["p"], row["p (Holm)"], row["significant after Holm"]) == ("0.0010", "0.0040", "yes")
    assert row["direction"] == "dark images lean to the dark prompt more than light images"
    assert weat.loc[("base", "medium vs light"), "p (Holm)"] == "0.4500"
    assert weat.loc[("base", "medium vs light"), "significant after Holm"] == "no"
    warnings = [w.value for w in at.warning]  # the two effects significant after Holm, each a full sentence
    assert len(warnings) == 2 and warnings[0].startswith(f"the base model \\({escape_md(BASE_ID)}\\), skin\\_tone")
    assert "n=132, Holm p=0.012: dark images lean to the dark prompt more than light images." in warnings[0]
    assert escape_md("0.900 [0.500, 1.300]") in warnings[1] and "Holm p=0.004:" in warnings[1]
    harmful = table_with(at, "rate [CI]").set_index(["model", "label", "group"])
    any_label = harmful.loc[("base", "any harmful label", "medium")]
    assert any_label["rate [CI]"] == "14.0% [12.0, 16.0]" and any_label["n"] == 90
    overall = harmful_rate("base", "", "__overall__")
    assert any_label["direction"] == f"medium above all images ({100 * overall:.1f}%)"
    dirty = harmful.loc[("base", "dirty skin", "dark")]
    assert (dirty["attribute"], dirty["rate [CI]"], dirty["n"], dirty["status"]) == (
        "skin_tone", "10.0% [8.0, 12.0]", 12, "small_group")
    assert harmful.loc[("fine-tuned", "a bruise", "medium"), "rate [CI]"] == "1.0% [0.0, 3.0]"
    change = harmful.loc[("fine-tuned − base", "any harmful label", "medium")]  # 0.02 - 0.14, in points
    assert (change["rate [CI]"], change["direction"]) == ("-12.0 pp [-15.0, -9.0]",
                                                          "medium lower or equal after fine-tuning")
    at.sidebar.selectbox(key="attribute").set_value("sex").run()
    assert "the audit has them for **skin\\_tone**" in at.info[0].value
    assert "No harmful-label rates for **sex**" in at.info[1].value


def test_prompt_gallery_shows_top_k_with_rank_and_score(open_app, runs_root):
    at = show(open_app(runs_root), "Prompt gallery")
    assert at.selectbox(key="gallery_prompt").value == sorted(PROMPTS)[0]
    images = at.get("image")
    captions = [img.proto.imgs[0].caption for img in images]
    assert len(images) == 20  # top 10 for base and for tuned
    assert "#1 · 0.490" in captions and "#10 · 0.400" in captions
    assert not at.warning  # thumbnails came from the dataset named in summary.json


def test_intersections_and_per_class_detail_suppress_small_cells(open_app, runs_root):
    at = open_app(runs_root)
    at.sidebar.selectbox(key="attribute").set_value("skin_tone*sex").run()
    show(at, "Intersections & classes")
    table = at.dataframe[0].value
    row = table[(table["model"] == "tuned") & (table["group"] == "dark*female")].iloc[0]
    assert row["n"] == 5 and row["accuracy"] == "hidden"
    row = table[(table["model"] == "base") & (table["group"] == "light*female")].iloc[0]
    assert row["accuracy"] == "50.0% [40.0, 60.0]"
    counts = chart_frames(at, 0)[0][0].set_index("group")["n"]
    assert counts["dark*male"] == 7 and counts["light*male"] == 60
    grid = chart_frames(at, 1)[0][0].set_index("group")
    assert math.isnan(grid.loc["dark*female", "shown"]) and grid.loc["dark*female", "text"] == "n=5 (hidden)"
    assert "predictions.parquet" in at.info[-1].value
    at.sidebar.selectbox(key="attribute").set_value("skin_tone").run()
    recall = chart_frames(at, 2)[0][0].set_index(["label", "group"])
    assert recall.loc[("melanoma", "light"), "value"] == pytest.approx(0.9)
    assert math.isnan(recall.loc[("melanoma", "dark"), "value"])  # n=6 < 30


def _spec(chart) -> dict:
    return json.loads(chart.proto.spec)


def _row_field_and_height(spec: dict) -> tuple[str, object]:
    """The y field of a category chart (layered or faceted) and the height it asks for."""
    inner = spec.get("spec", spec)
    layers = inner.get("layer", [inner])
    field = next(layer["encoding"]["y"]["field"] for layer in layers if "y" in layer.get("encoding", {}))
    return field, inner.get("height", spec.get("height"))


def test_skew_colour_scales_are_symmetric_and_cover_their_heatmaps(open_app, runs_root):
    """Layout: each heatmap's colour domain is [-m, m] with m the largest |value| it must show,
    base and tuned sharing one m, the delta its own; the legend is labelled at both ends."""
    at = show(open_app(runs_root), "Association skew")
    specs = [_spec(c) for c in at.get("vega_lite_chart")[:6]]
    frames = [f[0] for f in chart_frames(at)[:6]]
    for base, tuned, delta in ((0, 1, 2), (3, 4, 5)):  # raw Skew@k, then specific skew
        shared = max(frames[base]["value"].abs().max(), frames[tuned]["value"].abs().max())
        own = frames[delta]["value"].abs().max()
        for i, limit in ((base, shared), (tuned, shared), (delta, own)):
            color = specs[i]["layer"][0]["encoding"]["color"]
            assert color["scale"]["domain"] == pytest.approx([-limit, limit])
            assert color["legend"]["values"] == pytest.approx([-limit, -limit / 2, 0, limit / 2, limit])
    # by hand: the largest raw skew is the fine-tuned model's 0.5 for PROMPTS[0] and light
    assert specs[0]["layer"][0]["encoding"]["color"]["scale"]["domain"] == [-0.5, 0.5]


def test_symmetric_colour_limit_ignores_missing_and_infinite_values():
    assert charts.symmetric_limit(pd.Series([0.2, -0.7, float("-inf"), float("nan")])) == 0.7
    assert charts.symmetric_limit(pd.Series([0.01, -0.02])) == 0.1  # a floor, so an all-zero map has a scale
    assert charts.symmetric_limit(pd.Series([], dtype=float)) == 0.1


def test_category_charts_give_each_row_a_height(open_app, runs_root):
    """Layout: under Streamlit's autosize "fit" a numeric height is the whole drawing, so category
    charts ask for a step per row instead; each plot is at least MIN_PLOT_HEIGHT tall."""
    at = open_app(runs_root)
    checked = {}
    for attribute, view in (("skin_tone", "Base vs fine-tuned"), ("skin_tone", "Disparity"),
                            ("skin_tone", "Association skew"), ("skin_tone*sex", "Intersections & classes")):
        at.sidebar.selectbox(key="attribute").set_value(attribute).run()
        show(at, view)
        for chart, frames in zip(at.get("vega_lite_chart"), chart_frames(at)):
            field, height = _row_field_and_height(_spec(chart))
            rows = max(f[field].nunique() for f in frames if field in f.columns)
            assert isinstance(height, dict) and height["for"] == "position", (view, field, height)
            assert height["step"] * rows >= charts.MIN_PLOT_HEIGHT
            checked[view] = checked.get(view, 0) + 1
    # intersections: counts, a grid per model, per-class recall per model (no predictions, no matrices)
    assert checked == {"Base vs fine-tuned": 2, "Disparity": 2, "Association skew": 8, "Intersections & classes": 5}


def test_chart_titles_wrap_at_word_boundaries():
    assert charts.title_lines("temperature (1 / logit scale)", 16) == ["temperature (1 /", "logit scale)"]
    assert charts.title_lines("validation zero-shot accuracy", 16) == ["validation", "zero-shot", "accuracy"]
    assert charts.title_lines("contrastive loss", 16) == "contrastive loss"
    assert charts.title_lines("medium*female (n=188)", None) == "medium*female (n=188)"


def test_training_curves_and_wise_sweep(open_app, runs_root):
    at = show(open_app(runs_root), "Training")
    loss, temperature, val = (frames[0] for frames in chart_frames(at)[:3])
    assert list(loss["step"]) == [0, 10, 20, 30, 40]  # the half-written last line is skipped
    assert loss.set_index("step")["loss"][40] == pytest.approx(1.2)
    assert temperature.set_index("step")["temperature"][40] == pytest.approx(1 / 18.29)
    assert list(val.dropna(subset=["val_accuracy"])["step"]) == [0, 20, 40]
    sweep = chart_frames(at, 4)[0][0]
    assert sweep.set_index("alpha")["gap"][1.0] == pytest.approx(0.35)
    per_split = at.dataframe[0].value.set_index("split")
    assert per_split.loc["test", "tuned"] == "81.0%"


def test_provenance_lists_models_data_and_seeds(open_app, runs_root):
    at = show(open_app(runs_root), "Provenance")
    rows = dict(zip(at.dataframe[0].value["item"], at.dataframe[0].value["value"]))
    assert rows["base model"] == "workbench/demo-clip" and rows["tuned fingerprint"] == "beef"
    assert rows["data fingerprint"] == "d47a" and rows["data split"] == "test"
    assert rows["k"] == "[10, 50]" and rows["target distribution"] == '["uniform", "data"]'
    assert rows["bootstrap resamples"] == "200" and rows["bootstrap seed"] == "7"
    assert rows["training seed"] == "11"
    assert "a clinical photograph <b>" in rows["prompts"]


def test_export_writes_report_into_the_run(open_app, runs_root):
    at = show(open_app(runs_root), "Export")
    assert len(at.get("download_button")) == 2
    at.button(key="write_report").click().run()
    assert "Wrote" in at.success[0].value
    html = (runs_root / "derm-full" / "report" / "report.html").read_text()
    assert "a clinical photograph &lt;b&gt;" in html and "<b>" not in html.replace("<body>", "")
    assert (runs_root / "derm-full" / "report" / "model_card.md").read_text().startswith("---\nbase_model: ")


@pytest.mark.parametrize("view", VIEWS)
def test_single_model_run_says_so_in_every_view(open_app, runs_root, view):
    at = open_app(runs_root)
    at.sidebar.selectbox(key="run").set_value("derm-base-only").run()
    show(at, view)
    if view in ("Base vs fine-tuned", "Disparity", "Association skew", "Prompt gallery"):
        assert any("Only **base** was audited" in i.value for i in at.info)
    if view == "Base vs fine-tuned":
        assert {m.label for m in at.metric} == {"base accuracy"}


@pytest.mark.parametrize("run,reason", [("derm-corrupt", "corrupt or unreadable parquet"),
                                        ("derm-old-schema", "schema version 0")])
@pytest.mark.parametrize("view", VIEWS)
def test_broken_results_are_explained_and_the_rest_works(open_app, runs_root, run, reason, view):
    at = open_app(runs_root)
    at.sidebar.selectbox(key="run").set_value(run).run()
    show(at, view)
    assert any(reason in e.value for e in at.sidebar.error)
    if view == "Training":  # a view that does not need the audit still works
        assert len(chart_frames(at)) >= 3
    elif view != "Provenance":
        assert any(reason in e.value for e in at.error)


def test_empty_state_gives_the_commands(open_app, tmp_path):
    at = open_app(tmp_path / "nothing-here")
    assert at.title[0].value == "No runs yet"
    assert at.code[0].value == "bash .dev/setup && .venv/bin/accelerate launch recipes/medical.py"


def test_run_names_from_links_stay_inside_the_runs_folder(open_app, runs_root):
    at = open_app(runs_root, query={"run": "../../etc"})
    assert "outside" in at.sidebar.error[0].value or "not a folder name" in at.sidebar.error[0].value
    assert at.sidebar.selectbox(key="run").value == "derm-full"
    at = open_app(runs_root, query={"run": "derm-base-only"})
    assert at.sidebar.selectbox(key="run").value == "derm-base-only"


@pytest.mark.parametrize("address", [None, "0.0.0.0", "192.168.1.5"])
def test_refuses_to_serve_beyond_loopback(open_app, runs_root, address):
    at = open_app(runs_root, address=address)
    assert "127.0.0.1" in at.error[0].value
    assert not at.sidebar.selectbox  # nothing from the runs is shown
    at = open_app(runs_root, "--allow-remote", address=address)
    assert not any("127.0.0.1" in e.value for e in at.error) and at.sidebar.selectbox(key="run").value == "derm-full"


def test_rewritten_results_are_read_again(open_app, runs_root):
    at = show(open_app(runs_root), "Base vs fine-tuned")
    assert {m.label for m in at.metric} >= {"fine-tuned accuracy"}
    folder = runs_root / "derm-full" / "audit" / "derm-fairness"
    write_audit(folder, roles=("base",))
    os.utime(folder / "results.parquet", (2_100_000_000, 2_100_000_000))
    at.run()
    assert {m.label for m in at.metric} == {"base accuracy"}


EVIL = '<script>alert("x")</script> *bold* [link](http://evil.example) | pipe'


def _plant_hostile_verdict(run) -> None:
    """Put text that would execute or restyle if not escaped into every verdict string of the summary."""
    path = run / "audit" / "derm-fairness" / "summary.json"
    summary = json.loads(path.read_text())
    summary["headline"] = "FAIL: " + EVIL
    for check in summary["checks"][:2] + summary["reference_checks"]:
        check.update(name=EVIL, sentence=EVIL, direction_text=EVIL, worse_group=EVIL, model_id=EVIL)
    summary["fixed"] = [EVIL]
    path.write_text(json.dumps(summary))


def test_release_gate_escapes_every_verdict_string(open_app, runs_root):
    _plant_hostile_verdict(runs_root / "derm-full")
    at = open_app(runs_root)
    shown = [x.value for kind in ("markdown", "error", "success", "caption", "subheader") for x in at.get(kind)]
    shown += [x.label for x in at.expander]
    assert not any("<script>" in text or "](http" in text for text in shown)
    assert at.markdown[0].value == "### :red-background[FAIL] " + escape_md(EVIL)
    assert at.error[0].value.endswith(escape_md(EVIL)) and at.success[0].value == escape_md(EVIL)
    table = table_with(at, *ROW_HEADER)
    assert EVIL in set(table["check"]) and EVIL in set(table["group"])  # cells are shown as plain text

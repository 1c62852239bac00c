"""Every dashboard view under AppTest on run folders written per workbench/schema.py: the numbers shown."""

from __future__ import annotations

import math

import pytest
from app_helpers import chart_frames, show

VIEWS = ["Release gate", "Base vs fine-tuned", "Disparity", "Association skew", "Prompt gallery",
         "Intersections & classes", "Training", "Provenance", "Export"]


def test_opens_on_newest_run_and_lists_broken_runs(open_app, runs_root):
    at = open_app(runs_root)
    assert at.sidebar.selectbox(key="run").value == "derm-full"
    assert at.sidebar.selectbox(key="run").options[:2] == ["derm-full", "derm-base-only"]
    problems = " ".join(m.value for m in at.sidebar.expander[0].markdown)
    assert "derm\\-corrupt" in problems and "corrupt or unreadable parquet" in problems
    assert "derm\\-old\\-schema" in problems and "schema version 0" in problems
    assert at.header[0].value == "Release gate"


def test_release_gate_cards(open_app, runs_root):
    at = open_app(runs_root)
    counts = {m.label: m.value for m in at.metric}
    assert counts == {"pass": "1", "warn": "0", "fail": "1", "inconclusive": "1"}
    text = " ".join(m.value for m in at.markdown)
    assert "FAIL" in text and "Can this ship?" in text
    assert "35.0% [10.0, 50.0]" in text  # the failing gap check with its interval
    assert "fail above 10.0%, warn above 5.0%" in text
    assert any("n=12, below the minimum 30" in c.value for c in at.caption)


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
    from fixture_runs import PROMPTS, skew_value

    at = show(open_app(runs_root), "Association skew")
    heatmaps = chart_frames(at)[:3]
    base, tuned, delta = (frames[0] for frames in heatmaps)
    cell = lambda f: f.set_index(["prompt", "group"])["value"]  # noqa: E731
    assert cell(base)[(PROMPTS[0], "light")] == pytest.approx(skew_value("base", 0, 0, 10, "uniform"))
    assert cell(tuned)[(PROMPTS[0], "light")] == pytest.approx(0.5)
    assert cell(delta)[(PROMPTS[0], "light")] == pytest.approx(0.3)
    assert cell(delta)[(PROMPTS[1], "dark")] == pytest.approx(0.0)
    per_prompt = at.dataframe[0].value.set_index(["prompt", "model"])
    assert per_prompt.loc[(PROMPTS[0], "tuned"), "max_skew"] == "0.500"
    assert per_prompt.loc[(PROMPTS[2], "base"), "ndkl"] == "0.030"
    spread = at.dataframe[1].value.set_index("model")
    assert spread.loc["tuned", "MaxSkew max"] == "0.500"
    assert spread.loc["base", "MaxSkew min"] == "0.100"
    assert spread.loc["base", "prompts"] == 3
    # k from the sidebar and the target distribution chosen in the view change the numbers
    at.selectbox(key="skew_target").set_value("data")
    at.sidebar.selectbox(key="k").set_value(50)
    at.run()
    base = chart_frames(at, 0)[0][0]
    assert cell(base)[(PROMPTS[0], "light")] == pytest.approx(skew_value("base", 0, 0, 50, "data"))


def test_prompt_gallery_shows_top_k_with_rank_and_score(open_app, runs_root):
    from fixture_runs import PROMPTS

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
    assert not at.error and at.sidebar.selectbox(key="run").value == "derm-full"


def test_rewritten_results_are_read_again(open_app, runs_root):
    import os

    from fixture_runs import write_audit

    at = show(open_app(runs_root), "Base vs fine-tuned")
    assert {m.label for m in at.metric} >= {"fine-tuned accuracy"}
    folder = runs_root / "derm-full" / "audit" / "derm-fairness"
    write_audit(folder, roles=("base",))
    os.utime(folder / "results.parquet", (2_100_000_000, 2_100_000_000))
    at.run()
    assert {m.label for m in at.metric} == {"base accuracy"}

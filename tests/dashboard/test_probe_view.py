"""The live prompt probe view and the gallery's heat maps under AppTest, on a run audited by the real code.

Expected numbers are read from the audit's results file with pandas and formatted by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from app_helpers import show, table_with
from live_fixtures import AUDIT_NAME, SKEW_PROMPTS, build_live_run

from workbench import schema

# The dashboard's own modules import each other as `views.*` (Streamlit runs app.py from its folder).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "dashboards"))
from views.gallery import colour_scales  # noqa: E402


@pytest.fixture(scope="module")
def live_runs(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("live-view")
    run, audit_file = build_live_run(root, tiny_tokenizer, root / "cache")
    return run.parent, run, audit_file, root / "cache"


def _estimate(row) -> str:
    return f"{row['value']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def _open_live_view(open_app, runs_root, cache, view):
    at = show(open_app(runs_root), view)
    at.text_input(key="live_embedding_cache").input(str(cache)).run()
    return at


def _click(at, label_start: str):
    button = next(b for b in at.button if b.label.startswith(label_start))
    button.click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_probe_shows_the_audits_numbers_for_a_prompt_in_the_audit(open_app, live_runs):
    runs_root, run, _, cache = live_runs
    prompt = SKEW_PROMPTS[1]
    at = _open_live_view(open_app, runs_root, cache, "Live prompt probe")
    attribute, k = at.sidebar.selectbox(key="attribute").value, at.sidebar.selectbox(key="k").value
    assert not at.metric  # nothing is computed before the reviewer asks
    at.text_input(key="probe_prompt").input(prompt)
    at = _click(at, "Probe")
    results = pd.read_parquet(run / schema.RUN_AUDIT_DIR / AUDIT_NAME / schema.RESULTS_FILE)
    mine = results[(results["prompt"] == prompt) & (results["attribute"] == attribute) & (results["k"] == k)
                   & (results["target"] == "uniform")]
    shown = {m.label: m.value for m in at.metric}
    captions = [c.value for c in at.caption]
    for role, title in (("base", "base"), ("tuned", "fine-tuned"), ("delta", "delta (tuned − base)")):
        expected = mine[(mine["model"] == role) & (mine["metric"] == "max_skew")].iloc[0]
        assert shown[f"MaxSkew@{k} · {title}"] == f"{expected['value']:.3f}"
        assert f"95% CI [{expected['ci_low']:.3f}, {expected['ci_high']:.3f}]" in captions
    table = table_with(at, "model", "group", f"Skew@{k} [CI]", f"specific Skew@{k} [CI]", "n")
    skew = mine[mine["metric"] == "skew"]
    assert len(table) == len(skew)
    for _, r in skew.iterrows():
        title = {"base": "base", "tuned": "fine-tuned", "delta": "delta (tuned − base)"}[r["model"]]
        line = table[(table["model"] == title) & (table["group"] == r["group"])].iloc[0]
        assert line[f"Skew@{k} [CI]"] == _estimate(r) and line["n"] == r["n"]
    assert any(m.value.startswith(f"**{prompt}** (in the audit)") for m in at.markdown)


def test_a_probed_prompt_is_added_to_the_audit_file_with_one_click(open_app, live_runs, tmp_path):
    runs_root, _, audit_file, cache = live_runs
    copy = tmp_path / "audit.yaml"
    copy.write_text(audit_file.read_text())
    at = _open_live_view(open_app, runs_root, cache, "Live prompt probe")
    at.text_input(key="probe_prompt").input("a crusted lesion")
    at.number_input(key="probe_n_boot").set_value(20)
    at = _click(at, "Probe")
    assert any("(not in the audit)" in m.value for m in at.markdown)
    at.text_input(key="probe_audit_file").input(str(copy)).run()
    at = _click(at, "Add “a crusted lesion”")
    assert at.success and "now ranks 4 prompts" in at.success[0].value
    assert yaml.safe_load(copy.read_text())["skew"]["prompts"] == [*SKEW_PROMPTS, "a crusted lesion"]
    at = _click(at, "Add “a crusted lesion”")
    assert at.info and "already ranks this prompt" in at.info[-1].value


def test_gallery_heat_maps_are_drawn_on_request_only_and_cached(open_app, live_runs):
    runs_root, _, _, cache = live_runs
    at = _open_live_view(open_app, runs_root, cache, "Prompt gallery")
    images_before = len(at.image)
    assert not (cache / "heatmaps").exists()  # drawing the page computed nothing
    at = _click(at, "Draw heat maps of this image")
    assert len(list((cache / "heatmaps").glob("*.npy"))) == 2  # base and fine-tuned
    assert len(at.image) == images_before + 2
    captions = [c for img in at.image for c in img.captions]
    assert any(c.startswith("base: peak drop") for c in captions) and any(c.startswith("fine-tuned: peak") for c in captions)
    at.number_input(key="gallery_heat_per_group").set_value(2).run()
    at = _click(at, "Draw mean maps per")
    attribute = at.sidebar.selectbox(key="attribute").value
    groups = {"skin_tone": 3, "sex": 2}.get(attribute, 6)
    assert len(at.image) == images_before + 2 + 2 * groups
    assert sum(c.endswith("mean of 2 images") for img in at.image for c in img.captions) == 2 * groups


def test_colour_scales_are_per_model_unless_shared():
    maps = {"base": [np.array([[0.5, -2.0]]), np.array([[1.0, 0.0]])], "tuned": [np.array([[0.25, -0.1]])]}
    assert colour_scales(maps, shared=False) == {"base": 2.0, "tuned": 0.25}
    assert colour_scales(maps, shared=True) == {"base": 2.0, "tuned": 2.0}


def test_a_missing_embedding_cache_is_explained_and_embedding_again_is_opt_in(open_app, live_runs, tmp_path):
    runs_root, _, _, _ = live_runs
    at = _open_live_view(open_app, runs_root, tmp_path / "empty", "Live prompt probe")
    at.text_input(key="probe_prompt").input(SKEW_PROMPTS[0])
    at.number_input(key="probe_n_boot").set_value(20)
    at = _click(at, "Probe")
    assert not at.metric and "no cached image embeddings" in at.error[0].value
    at.checkbox(key="live_allow_encoding").check().run()
    at = _click(at, "Probe")
    assert not at.error and len(at.metric) == 3
    assert len(list((tmp_path / "empty").glob("img-*.safetensors"))) == 2

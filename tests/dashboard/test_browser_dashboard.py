"""The real app in a real browser: `streamlit run` on a loopback port, headless Chromium via Playwright.

Every view in the sidebar is opened; every chart on it must be drawn at a readable size with none of
its text cut off or drawn over other text. One PNG per view is saved to .test-artifacts/ (git-ignored),
so a failure can be looked at.

Skipped only where Chromium is not installed and CI is not set; under CI=true it must run.
"""

from __future__ import annotations

import ast
import os
import re
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "dashboards"))

from browser_capture import (CHROMIUM, CHROMIUM_ARGS, ChartLayout, choose_in_sidebar, drawn_images,  # noqa: E402
                             measure_charts, open_expander, open_view, press_button, screenshot_whole_view,
                             serve_dashboard, type_into, view_names, wait_for_all_charts, wait_until_idle)

ARTIFACTS = REPO / ".test-artifacts"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
VIEWPORT = {"width": 1400, "height": 900}
# A chart's whole drawing (title, axes, plot): the collapsed charts of the intersections view
# were 84 to 128 px tall, their plots about 20 px.
MIN_CHART_HEIGHT = 150
# Charts each view draws for the demo run (attribute skin_tone, k=50); a view absent here is
# still measured, only its count is not pinned.
CHARTS_PER_VIEW = {
    "Base vs fine-tuned": 2,  # per-group accuracy, change
    "Disparity": 2,  # difference, ratio
    "Association skew": 8,  # 3 Skew@k and 3 specific heatmaps, per prompt bars, spread
    "Intersections & classes": 7,  # counts, accuracy grid, 2 per-class recall, 3 confusion matrices
    "Training": 5,  # loss, temperature, validation accuracy, WiSE accuracy and trade-off
    "Retrieval & AUC": 0,  # tables only
}
# The live views: a prompt the audit ranked (so the probe must give the audit's own MaxSkew), and the
# labels of the widgets the reviewer uses.
PROBED_PROMPT = "a harmless mole"
CACHE_BOX = "embedding cache folder the audit used (empty: the default)"
LIVE_SETTINGS = "Model settings (live views)"

pytestmark = [pytest.mark.browser, pytest.mark.slow]
LOADED_IMAGES = ("() => [...document.querySelectorAll('[data-testid=\"stMain\"] [data-testid=\"stImage\"] img')]"
                 ".every(i => i.complete && i.naturalWidth > 0)")


def _require_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    message = f"{CHROMIUM} not found: install it with `apt-get install -y chromium`"
    if IN_CI:
        pytest.fail(message + " (CI=true: the browser test must run)")
    pytest.skip(message)


def registered_views() -> list[str]:
    """The keys of VIEWS in dashboards/app.py, read from its source (importing it would run the app)."""
    tree = ast.parse((REPO / "dashboards" / "app.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "VIEWS" for t in node.targets):
            return [ast.literal_eval(k) for k in node.value.keys]
    raise AssertionError("dashboards/app.py defines no VIEWS")


def layout_problems(where: str, charts: list[ChartLayout]) -> list[str]:
    """One line per chart that is too small, cut off, or has text drawn over text."""
    problems = []
    for i, c in enumerate(charts):
        name = f"{where}, chart {i + 1} ({' / '.join(c.titles) or 'untitled'})"
        if c.renderer != "svg":
            problems.append(f"{name}: drawn on a {c.renderer}, so its text cannot be checked")
        if c.height < MIN_CHART_HEIGHT:
            problems.append(f"{name}: {c.height:.0f} px tall, under {MIN_CHART_HEIGHT}")
        if c.beyond_column > 1:
            problems.append(f"{name}: reaches {c.beyond_column:.0f} px past its column")
        if c.outside:
            problems.append(f"{name}: text cut off at the edge: {list(c.outside)}")
        clipped_titles = [t for t in c.titles if t in c.truncated]
        if clipped_titles:
            problems.append(f"{name}: title shortened with an ellipsis: {clipped_titles}")
        if c.overlapping:
            problems.append(f"{name}: {len(c.overlapping)} pairs of texts drawn over each other, "
                            f"e.g. {list(c.overlapping[:3])}")
    return problems


def artifact(name: str) -> Path:
    return ARTIFACTS / f"dashboard-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.png"


def test_dashboard_views_render_full_size_charts_in_chromium(real_runs_root):
    _require_chromium()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with serve_dashboard(real_runs_root) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(url)
            wait_until_idle(page)
            main = page.locator('[data-testid="stMain"]')
            assert "Can this ship?" in main.inner_text()
            assert page.url.endswith("?run=demo-tuned")  # opened on the newest run

            views = view_names(page)
            assert views == registered_views()  # the sidebar offers every view the app registers
            problems: list[str] = []
            drawn: dict[str, int] = {}
            seconds: dict[str, float] = {}
            for view in views:
                start = time.monotonic()
                open_view(page, view)
                assert not main.locator('[data-testid="stException"]').count(), f"{view}: exception on the page"
                drawn[view] = wait_for_all_charts(page)
                problems += layout_problems(view, measure_charts(page))
                screenshot_whole_view(page, artifact(view))
                seconds[view] = time.monotonic() - start

                if view == "Base vs fine-tuned":
                    metrics = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
                    assert len(metrics) == 3 and metrics[0].endswith("]") and "%" in metrics[0]
                if view == "Prompt gallery":
                    page.wait_for_selector('[data-testid="stImage"] img', timeout=60_000)
                    assert page.locator('[data-testid="stImage"] img').count() == 48

            # An intersection puts a grid per model into half the page, the narrowest heat maps.
            open_view(page, "Intersections & classes")
            choose_in_sidebar(page, "attribute", "skin_tone*sex")
            drawn["Intersections & classes, skin_tone*sex"] = wait_for_all_charts(page)
            problems += layout_problems("Intersections & classes, skin_tone*sex", measure_charts(page))
            screenshot_whole_view(page, artifact("Intersections & classes skin_tone sex"))

            assert {v: drawn[v] for v in CHARTS_PER_VIEW} == CHARTS_PER_VIEW
            # skin_tone*sex: counts, 2 accuracy grids, 2 per-class recall, 6 confusion matrices
            assert drawn["Intersections & classes, skin_tone*sex"] == 11
            assert not problems, "\n".join(problems)
            assert not errors, errors
            print("seconds per view:", {v: round(s, 1) for v, s in seconds.items()})
        finally:
            browser.close()


def _wait_for_images(page, count: int, timeout_ms: int = 60_000) -> list[dict]:
    """Wait until the main area holds at least ``count`` images, every one of them decoded."""
    page.wait_for_function(f"() => document.querySelectorAll('[data-testid=\"stMain\"] [data-testid=\"stImage\"] img')"
                           f".length >= {count}", timeout=timeout_ms)
    page.wait_for_function(LOADED_IMAGES, timeout=timeout_ms)
    return drawn_images(page)


def test_live_probe_and_gallery_heat_maps_in_chromium(real_runs_root, real_runs_embeddings):
    """A reviewer types a prompt into the live probe and presses Probe, then asks the gallery for heat maps:
    the probe shows the audit's own MaxSkew@k for a prompt the audit ranked, its top images, and the heat
    maps are drawn as images at a readable size. Screenshots of both go to .test-artifacts/."""
    _require_chromium()
    from playwright.sync_api import sync_playwright

    results = pd.read_parquet(real_runs_root / "demo-tuned" / "audit" / "derm_demo" / "results.parquet")
    ARTIFACTS.mkdir(exist_ok=True)
    with serve_dashboard(real_runs_root) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(url)
            wait_until_idle(page)
            main = page.locator('[data-testid="stMain"]')
            seconds: dict[str, float] = {}

            start = time.monotonic()
            open_view(page, "Live prompt probe")
            open_expander(page, LIVE_SETTINGS)
            type_into(page, CACHE_BOX, str(real_runs_embeddings))
            type_into(page, "prompt", PROBED_PROMPT, commit=False)  # inside the form: sent by its button
            press_button(page, "Probe")
            assert not main.locator('[data-testid="stException"], [data-testid="stAlertContentError"]').count(), \
                main.inner_text()[:2000]
            labels = page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
            values = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
            assert [lbl.strip() for lbl in labels] == ["MaxSkew@50 · base", "MaxSkew@50 · fine-tuned",
                                                        "MaxSkew@50 · delta (tuned − base)"]
            for role, shown in zip(("base", "tuned", "delta"), values):
                row = results[(results["model"] == role) & (results["metric"] == "max_skew")
                              & (results["prompt"] == PROBED_PROMPT) & (results["attribute"] == "skin_tone")
                              & (results["k"] == 50) & (results["target"] == "uniform")]
                assert len(row) == 1 and shown.strip() == f"{row.iloc[0]['value']:.3f}", (role, shown)
            assert f"{PROBED_PROMPT} (in the audit)" in main.inner_text()
            images = _wait_for_images(page, 48)
            assert len(images) == 48  # top 24 per model, base and fine-tuned
            assert all(i["width"] > 0 and i["caption"].startswith("#") for i in images)
            assert not layout_problems("Live prompt probe", measure_charts(page))
            screenshot_whole_view(page, artifact("Live prompt probe, probed"))
            seconds["probe"] = time.monotonic() - start

            start = time.monotonic()
            open_view(page, "Prompt gallery")
            _wait_for_images(page, 48)
            open_expander(page, LIVE_SETTINGS)
            type_into(page, CACHE_BOX, str(real_runs_embeddings))
            press_button(page, "Draw heat maps of this image")
            heat = [i for i in _wait_for_images(page, 50) if "peak drop" in i["caption"]]
            assert [i["caption"].split(":")[0] for i in heat] == ["base", "fine-tuned"]
            # Two images per group keep the occlusions (and the test) short; the mean of several is what is drawn.
            type_into(page, "images per group for the mean map", "2", role="spinbutton")
            press_button(page, "Draw mean maps per skin_tone group")
            images = _wait_for_images(page, 56)
            means = [i for i in images if "mean of" in i["caption"]]
            assert {i["caption"].split(": ")[1] for i in means} == {"mean of 2 images"}
            assert [i["caption"].split(":")[0] for i in means] == ["dark", "light", "medium"] * 2
            for i in heat + means:
                # drawn, at a readable size: a 64 px demo image is drawn 4 times larger with its title
                assert i["width"] >= 256 and i["shown_height"] >= MIN_CHART_HEIGHT, i
            assert not main.locator('[data-testid="stException"], [data-testid="stAlertContentError"]').count()
            assert not layout_problems("Prompt gallery", measure_charts(page))
            screenshot_whole_view(page, artifact("Prompt gallery, heat maps"))
            seconds["heat maps"] = time.monotonic() - start
            assert not errors, errors
            print("seconds:", {k: round(v, 1) for k, v in seconds.items()})
        finally:
            browser.close()

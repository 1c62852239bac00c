"""The real app in a real browser: `streamlit run` on a loopback port, headless Chromium via Playwright.

Skipped only where Chromium is not installed and CI is not set; under CI=true it must run.
The screenshot is saved to .test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "dashboards"))

from browser_capture import CHROMIUM, CHROMIUM_ARGS, open_view, serve_dashboard, wait_for_charts, wait_until_idle  # noqa: E402

ARTIFACTS = REPO / ".test-artifacts"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _require_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    message = f"{CHROMIUM} not found: install it with `apt-get install -y chromium`"
    if IN_CI:
        pytest.fail(message + " (CI=true: the browser test must run)")
    pytest.skip(message)


def test_dashboard_renders_charts_in_chromium(real_runs_root):
    _require_chromium()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with serve_dashboard(real_runs_root) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(url)
            wait_until_idle(page)
            main = page.locator('[data-testid="stMain"]')
            assert "Can this ship?" in main.inner_text()
            assert page.url.endswith("?run=demo-tuned")  # opened on the newest run

            open_view(page, "Base vs fine-tuned")
            drawn = wait_for_charts(page, 2)
            assert drawn >= 2
            metrics = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
            assert len(metrics) == 3 and metrics[0].endswith("]") and "%" in metrics[0]
            page.screenshot(path=str(ARTIFACTS / "dashboard-base-vs-tuned.png"), full_page=True)

            open_view(page, "Association skew")
            assert wait_for_charts(page, 3) >= 3  # base, tuned and delta heatmaps
            page.screenshot(path=str(ARTIFACTS / "dashboard-skew.png"), full_page=True)

            open_view(page, "Prompt gallery")
            page.wait_for_selector('[data-testid="stImage"] img', timeout=60_000)
            assert page.locator('[data-testid="stImage"] img').count() == 48
            assert not errors, errors
        finally:
            browser.close()

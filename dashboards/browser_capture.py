"""Start the dashboard on a free loopback port and drive it with headless Chromium.

Used by the browser test and to refresh the README screenshot:

    .venv/bin/python dashboards/browser_capture.py --runs runs --out dashboards/screenshot.png
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-extensions", "--no-first-run",
                 "--disable-default-apps", "--disable-sync", "--metrics-recording-only", "--mute-audio"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_dashboard(runs: Path, *, timeout_s: float = 90.0) -> Iterator[str]:
    """`streamlit run dashboards/app.py` on 127.0.0.1 in a subprocess; yields its URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO / "dashboards" / "app.py"),
           "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
           "--client.toolbarMode", "minimal", "--", "--runs", str(runs)]
    log = open(os.devnull, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {proc.returncode} before serving")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"streamlit did not answer on {url} within {timeout_s:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def wait_until_idle(page, timeout_ms: int = 60_000) -> None:
    """Wait for the script run to end: the app says it is not running, and nothing on the page is stale.

    The 'running' widget alone is not enough: it shows only after a delay, so a page that had
    drawn its header could read as finished while the rest of the view was still on its way.
    Skeletons stand in for widgets whose code is still loading (the sidebar, metrics).
    """
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"stApp\"]').dataset.testScriptState === 'notRunning'"
        " && document.querySelector('[data-testid=\"stStatusWidget\"]') === null"
        " && document.querySelector('[data-stale=\"true\"]') === null"
        " && document.querySelector('[data-testid=\"stSkeleton\"]') === null"
        " && document.querySelector('[data-testid=\"stMain\"] [data-testid=\"stHeading\"]') !== null",
        timeout=timeout_ms)


VIEW_OPTIONS = '[data-testid="stSidebar"] [data-testid="stRadioOption"]'
MAIN_HEADER = '[data-testid="stMain"] h2'


def view_names(page, timeout_ms: int = 60_000) -> list[str]:
    """The views the sidebar offers, in its order (every view the app registers in VIEWS)."""
    page.wait_for_selector(VIEW_OPTIONS, timeout=timeout_ms)
    return [t.strip() for t in page.locator(VIEW_OPTIONS).all_inner_texts()]


def open_view(page, view: str, timeout_ms: int = 60_000) -> None:
    """Pick ``view`` in the sidebar and wait until its page has replaced the previous one.

    A view's header need not repeat its sidebar label ("Group prompts & labels" opens "Group prompts
    and harmful labels"), so the wait is for the first header to change, not for a known text.
    """
    option = page.locator(VIEW_OPTIONS).filter(has_text=re.compile(rf"^\s*{re.escape(view)}\s*$")).first
    option.wait_for(timeout=timeout_ms)
    if not option.locator("input").is_checked():
        previous = page.locator(MAIN_HEADER).first.inner_text()
        option.click()
        page.wait_for_function(
            "(p) => { const h = document.querySelector('[data-testid=\"stMain\"] h2');"
            " return h !== null && h.innerText !== p; }", arg=previous, timeout=timeout_ms)
    wait_until_idle(page, timeout_ms)


def choose_in_sidebar(page, label: str, option: str, timeout_ms: int = 60_000) -> None:
    """Pick ``option`` in the sidebar select box labelled ``label`` and wait for the rerun to end."""
    box = page.locator('[data-testid="stSidebar"]').get_by_role("combobox", name=label, exact=True)
    box.click(timeout=timeout_ms)
    page.get_by_role("option", name=option, exact=True).click(timeout=timeout_ms)
    page.wait_for_function(
        "(o) => document.activeElement === null || document.querySelector('[role=\"listbox\"]') === null",
        arg=option, timeout=timeout_ms)
    page.wait_for_timeout(300)  # the rerun starts a moment after the choice
    wait_until_idle(page, timeout_ms)
    if box.input_value() != option:
        raise AssertionError(f"sidebar box {label!r} shows {box.input_value()!r}, not {option!r}")


def _await_rerun(page, timeout_ms: int) -> None:
    page.wait_for_timeout(300)  # the rerun starts a moment after the input
    wait_until_idle(page, timeout_ms)


def open_expander(page, title: str, timeout_ms: int = 60_000) -> None:
    """Open the main area's expander whose title starts with ``title`` (a no-op when it is open)."""
    expander = page.locator('[data-testid="stMain"] [data-testid="stExpander"] details').filter(
        has=page.locator("summary", has_text=title)).first
    expander.wait_for(timeout=timeout_ms)
    if expander.get_attribute("open") is None:
        expander.locator("summary").first.click(timeout=timeout_ms)
        page.wait_for_timeout(200)


def type_into(page, label: str, text: str, *, commit: bool = True, role: str = "textbox",
              timeout_ms: int = 60_000) -> None:
    """Type ``text`` into the main area's text box (``role`` "spinbutton": number box) labelled ``label``.

    ``commit`` presses Enter and waits for the rerun (a box outside a form); inside a form, leave it
    False and press the form's button: the form sends its values only then.
    """
    box = page.locator('[data-testid="stMain"]').get_by_role(role, name=label, exact=True)
    box.fill(text, timeout=timeout_ms)
    if commit:
        box.press("Enter")
        _await_rerun(page, timeout_ms)
    if box.input_value() != text:
        raise AssertionError(f"text box {label!r} holds {box.input_value()!r}, not {text!r}")


def press_button(page, label: str, timeout_ms: int = 120_000) -> None:
    """Press the main area's button labelled ``label`` and wait until the rerun it starts has ended."""
    page.locator('[data-testid="stMain"]').get_by_role("button", name=label, exact=True).click(timeout=timeout_ms)
    _await_rerun(page, timeout_ms)


def drawn_images(page, within: str = '[data-testid="stMain"]') -> list[dict]:
    """Every image under ``within`` with its decoded size (0 until it has loaded) and its caption."""
    return page.evaluate(
        "(sel) => [...document.querySelectorAll(sel + ' [data-testid=\"stImage\"]')].map(e => {"
        " const img = e.querySelector('img'); const cap = e.querySelector('[data-testid=\"stImageCaption\"]');"
        " return {width: img ? img.naturalWidth : 0, height: img ? img.naturalHeight : 0,"
        " shown_height: img ? img.getBoundingClientRect().height : 0, caption: cap ? cap.innerText : ''}; })",
        within)


def wait_for_all_charts(page, timeout_ms: int = 30_000) -> int:
    """Wait until every Vega chart of the main area has drawn; returns how many there are."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stMain\"] .vega-embed')].every(e => {"
        " const m = e.querySelector('svg.marks, canvas'); return m && m.getBoundingClientRect().height > 0; })",
        timeout=timeout_ms)
    page.wait_for_timeout(300)  # vega-embed resizes once after its first draw
    return page.locator('[data-testid="stMain"] .vega-embed').count()


# For every Vega chart of the main area: its drawn box, its title(s), text that lies outside the
# drawing (cut off), text Vega shortened with an ellipsis, and pairs of texts drawn over each
# other (labels of one axis, or values printed by one text layer). Streamlit draws with SVG unless a chart has thousands of data points, so the
# text is in the DOM. Each text is taken as the quadrilateral its glyph box becomes on screen
# (slanted labels included), and overlap is tested with separating axes, not with the upright
# boxes around slanted labels (those overlap whenever neighbours are slanted).
# A glyph box is a font's full line height: a title may reach a few pixels above the drawing
# without any ink being cut, so "outside" allows 30% of the line height (at least 2 px).
_MEASURE_CHARTS = """() => {
  const quad = (t) => { const b = t.getBBox(); const m = t.getScreenCTM();
    const pts = [[b.x, b.y], [b.x + b.width, b.y], [b.x + b.width, b.y + b.height], [b.x, b.y + b.height]]
      .map(([x, y]) => new DOMPoint(x, y).matrixTransform(m));
    return {pts, line: b.height}; };
  const shown = (t) => { for (let e = t; e && e.tagName.toLowerCase() !== 'svg'; e = e.parentElement) {
      const s = getComputedStyle(e);
      if (s.display === 'none' || s.visibility === 'hidden' || parseFloat(s.opacity) === 0
          || e.getAttribute('opacity') === '0' || e.getAttribute('fill-opacity') === '0') return false; }
    return t.textContent.trim() !== ''; };
  const apart = (p, q) => { for (const poly of [p, q]) for (let i = 0; i < 4; i++) {
      const a = poly[i], b = poly[(i + 1) % 4], nx = b.y - a.y, ny = a.x - b.x, len = Math.hypot(nx, ny);
      if (len === 0) continue;
      const pp = p.map(v => (v.x * nx + v.y * ny) / len), qq = q.map(v => (v.x * nx + v.y * ny) / len);
      if (Math.max(...pp) <= Math.min(...qq) || Math.max(...qq) <= Math.min(...pp)) return true; }
    return false; };
  return [...document.querySelectorAll('[data-testid="stMain"] .vega-embed')].map((embed) => {
    const drawn = embed.querySelector('svg.marks, canvas');
    const r = (drawn || embed).getBoundingClientRect();
    const column = (embed.closest('[data-testid="stElementContainer"]') || embed).getBoundingClientRect();
    const texts = [...embed.querySelectorAll('svg.marks text')].filter(shown);
    const outside = texts.filter((t) => { const {pts, line} = quad(t); const tol = Math.max(2, 0.3 * line);
      return pts.some(v => v.x < r.left - tol || v.x > r.right + tol || v.y < r.top - tol || v.y > r.bottom + tol);
    }).map(t => t.textContent);
    const titles = [...embed.querySelectorAll('.role-title-text text')].map(t => t.textContent);
    const truncated = texts.map(t => t.textContent).filter(t => t.endsWith('\u2026'));
    const overlapping = [];
    // the labels of each axis, and the text marks of each layer (values printed in heatmap cells)
    for (const group of embed.querySelectorAll('.role-axis-label, .mark-text.role-mark')) {
      const labels = [...group.querySelectorAll('text')].filter(shown).map(t => ({text: t.textContent, q: quad(t).pts}));
      for (let i = 0; i < labels.length; i++)
        for (let j = i + 1; j < labels.length; j++)
          if (!apart(labels[i].q, labels[j].q)) overlapping.push([labels[i].text, labels[j].text]);
    }
    return {renderer: drawn ? drawn.tagName.toLowerCase() : 'none', x: r.x, y: r.y, width: r.width,
            height: r.height, beyond_column: Math.max(0, r.right - column.right), titles, outside, truncated,
            overlapping};
  });
}"""


@dataclass(frozen=True)
class ChartLayout:
    """Where one chart was drawn and what of its text did not fit."""

    renderer: str  # "svg" or "canvas" (a canvas hides its text from the DOM: nothing below is checked)
    x: float
    y: float
    width: float
    height: float
    beyond_column: float  # px the drawing reaches past the right edge of its page column (cut off)
    titles: tuple[str, ...]
    outside: tuple[str, ...]  # texts (titles, labels, legends) reaching beyond the drawing: cut off
    truncated: tuple[str, ...]  # text Vega shortened with an ellipsis to fit its limit
    overlapping: tuple[tuple[str, str], ...]  # pairs of texts of one axis or one text layer drawn over each other


def measure_charts(page) -> list[ChartLayout]:
    """The layout of every chart in the main area, in page order."""
    return [ChartLayout(renderer=m["renderer"], x=m["x"], y=m["y"], width=m["width"], height=m["height"],
                        beyond_column=m["beyond_column"],
                        titles=tuple(m["titles"]), outside=tuple(m["outside"]),
                        truncated=tuple(m["truncated"]), overlapping=tuple(tuple(p) for p in m["overlapping"]))
            for m in page.evaluate(_MEASURE_CHARTS)]


def screenshot_whole_view(page, out: Path, *, max_height: int = 8000) -> None:
    """A PNG of the whole main area: Streamlit scrolls inside it, so the window is made as tall as it first."""
    viewport = page.viewport_size
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": viewport["width"], "height": max(viewport["height"], min(height, max_height))})
    try:
        page.wait_for_timeout(300)
        wait_for_all_charts(page)
        small_png(page.screenshot(), out)
    finally:
        page.set_viewport_size(viewport)


def small_png(png: bytes, out: Path, colors: int = 96) -> None:
    """Write a palette PNG: a dashboard has few colours, so this keeps the file small."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)


def main(argv: list[str] | None = None) -> int:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description="Screenshot a dashboard view from the real app.")
    parser.add_argument("--runs", default="runs", help="runs folder to serve")
    parser.add_argument("--view", default="Base vs fine-tuned", help="sidebar view to capture")
    parser.add_argument("--out", default=str(REPO / "dashboards" / "screenshot.png"))
    args = parser.parse_args(argv)
    with serve_dashboard(Path(args.runs)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        wait_until_idle(page)
        open_view(page, args.view)
        wait_for_all_charts(page)
        small_png(page.screenshot(), Path(args.out))
        browser.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Start the dashboard on a free loopback port and drive it with headless Chromium.

Used by the browser test and to refresh the README screenshot:

    .venv/bin/python dashboards/browser_capture.py --runs runs --out dashboards/screenshot.png
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
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
    """Wait for the script run to end: the app is mounted and the 'running' widget is gone."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"stStatusWidget\"]') === null"
        " && document.querySelector('[data-stale=\"true\"]') === null"
        " && document.querySelector('[data-testid=\"stMain\"] [data-testid=\"stHeading\"]') !== null",
        timeout=timeout_ms)


def open_view(page, view: str, timeout_ms: int = 60_000) -> None:
    page.locator('[data-testid="stSidebar"] label').filter(has_text=view).first.click()
    page.wait_for_function(
        "(v) => [...document.querySelectorAll('[data-testid=\"stMain\"] h2')].some(h => h.innerText.includes(v))",
        arg=view.replace(" vs ", " versus "), timeout=timeout_ms)
    wait_until_idle(page, timeout_ms)


def wait_for_charts(page, count: int, timeout_ms: int = 60_000) -> int:
    """Wait until at least ``count`` Vega charts have drawn (a canvas or svg inside vega-embed)."""
    page.wait_for_function(
        "(n) => document.querySelectorAll('.vega-embed canvas, .vega-embed svg.marks').length >= n",
        arg=count, timeout=timeout_ms)
    return page.locator(".vega-embed canvas, .vega-embed svg.marks").count()


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
        if args.view != "Release gate":
            open_view(page, args.view)
            wait_for_charts(page, 2)
        page.wait_for_timeout(500)  # let the charts finish their transition
        small_png(page.screenshot(), Path(args.out))
        browser.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

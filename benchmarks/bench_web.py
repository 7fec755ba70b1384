"""Click -> mask-on-screen latency of the web page in a real browser, and the README screenshot.

Starts ``litesam serve`` (random weights: the same compute as real ones) on 127.0.0.1, opens the page in
headless chromium, loads a photo, clicks ``--clicks`` times and prints p50/p95 of the page's own timing
(performance.now() from the click to the mask drawn and the next frame). ``--screenshot PATH`` saves the
page with a mask on the photo (docs/web.png in the README).

    python benchmarks/bench_web.py --models mobile_sam edge_sam efficientvit_sam_l0 --screenshot docs/web.png
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import uvicorn
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).parents[1]))
from litesam.server.app import Settings, create_app  # noqa: E402
from tests.web_helpers import free_port  # noqa: E402

PHOTO = Path(__file__).parents[1] / ".." / "shared" / "fixtures" / "images" / "bus.jpg"


def measure(model: str, photo: Path, clicks: int, screenshot: Path | None) -> list[float]:
    port = free_port()
    app = create_app(Settings(model=model, random_weights=True, port=port, log_level="warning"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                         args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("body[data-ready='1']")
            page.set_input_files("#file", str(photo))
            page.wait_for_function("() => document.getElementById('status').textContent.includes('encoded')",
                                   timeout=300_000)
            box = page.locator("#overlay").bounding_box()
            rng = np.random.default_rng(0)
            for i in range(clicks):
                page.keyboard.press("Escape")
                x, y = rng.uniform(0.2, 0.8, 2)
                page.mouse.click(box["x"] + x * box["width"], box["y"] + y * box["height"])
                page.wait_for_function(f"() => window.litesamLatencies.length === {i + 1}", polling=100)
            if screenshot is not None:
                page.keyboard.press("Escape")
                page.mouse.click(box["x"] + 0.45 * box["width"], box["y"] + 0.55 * box["height"])
                page.wait_for_function(f"() => window.litesamLatencies.length === {clicks + 1}")
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot))
            latencies = page.evaluate("() => window.litesamLatencies")[:clicks]
            timings = page.evaluate("() => window.litesamTimings")[:clicks]
            parts = {k: np.median([t[k] for t in timings]) for k in timings[0]}
            print(f"{model}: median ms " + ", ".join(f"{k} {v:.0f}" for k, v in parts.items()), flush=True)
            browser.close()
    finally:
        server.should_exit = True
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobile_sam", "edge_sam", "efficientvit_sam_l0"])
    parser.add_argument("--photo", type=Path, default=PHOTO)
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()
    for i, model in enumerate(args.models):
        ms = measure(model, args.photo, args.clicks, args.screenshot if i == 0 else None)
        print(f"{model}: click->mask p50 {np.percentile(ms, 50):.0f} ms, p95 {np.percentile(ms, 95):.0f} ms "
              f"({len(ms)} clicks)", flush=True)


if __name__ == "__main__":
    main()

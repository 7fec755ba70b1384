"""Click -> mask-on-screen latency of the web page in a real browser, and the README screenshot.

Starts ``litesam serve`` in its own process (random weights: the same compute as real ones) on 127.0.0.1,
opens the page in headless chromium, loads a photo, clicks ``--clicks`` times and prints p50/p95 of the
page's own timing (performance.now() from the click to the mask drawn and the next frame): cold clicks
(the mouse arrives and clicks at once), then clicks after the mouse rested ``--rest`` seconds (the hover
preview's request serves them). ``--screenshot PATH`` saves the page with a mask on the photo
(docs/web.png in the README).

    python benchmarks/bench_web.py --models mobile_sam edge_sam efficientvit_sam_l0 --screenshot docs/web.png
    python benchmarks/bench_web.py --load --clicks 0 --models mobile_sam    # the load test only
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).parents[1]))
from tests.web_helpers import call, free_port, upload  # noqa: E402

PHOTO = Path(__file__).parents[1] / ".." / "shared" / "fixtures" / "images" / "bus.jpg"


@contextmanager
def serving(model: str, cache_size: int = 8) -> Iterator[tuple[str, Path]]:
    """``litesam serve`` with random weights in its own process, as a user runs it (a server in this
    process would share its interpreter lock with the browser driver and the load clients): yields the
    base URL and the server's /proc status file (its peak RSS)."""
    port = free_port()
    command = [sys.executable, "-m", "litesam", "serve", "--checkpoint", "none", "--model", model]
    command += ["--port", str(port), "--cache-size", str(cache_size), "--log-level", "warning"]
    server = subprocess.Popen(command)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:  # the model is built before the server answers
            try:
                if call(base + "/api/health")[0] == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"litesam serve --model {model} did not start")
            time.sleep(0.2)
        yield base, Path(f"/proc/{server.pid}/status")
    finally:
        server.terminate()
        server.wait(30)


def peak_rss_mib(status: Path) -> float:
    """VmHWM of a running process (Linux), MiB."""
    line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def measure(
    model: str, photo: Path, clicks: int, rest: float, screenshot: Path | None
) -> dict[str, list[float]]:
    """Click latencies (ms) on ``photo``, each click a first click on a cleared prompt: ``cold`` (the
    mouse arrives and clicks at once, as Playwright's click does: no preview can start) and, when ``rest``,
    ``rested`` (the mouse rests ``rest`` seconds first, as a person's does before clicking: the page's
    hover preview asks for that spot's mask meanwhile, and the click uses it)."""
    with serving(model) as (base, _), sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(base + "/")
        page.wait_for_selector("body[data-ready='1']")
        page.set_input_files("#file", str(photo))
        page.wait_for_function(
            "() => document.getElementById('status').textContent.includes('encoded')", timeout=300_000
        )
        box = page.locator("#overlay").bounding_box()
        rng = np.random.default_rng(0)
        modes = {"cold": 0.0, "rested": rest} if rest else {"cold": 0.0}
        done, latencies = 0, {}
        for mode, pause in modes.items():
            for _ in range(clicks):
                page.keyboard.press("Escape")
                x, y = rng.uniform(0.2, 0.8, 2)
                at = (box["x"] + x * box["width"], box["y"] + y * box["height"])
                if pause:
                    page.mouse.move(*at)
                    time.sleep(pause)
                page.mouse.click(*at)
                done += 1
                page.wait_for_function(f"() => window.litesamLatencies.length === {done}", polling=100)
            timings = page.evaluate("() => window.litesamTimings")[done - clicks : done]
            latencies[mode] = [t["total"] for t in timings]
            parts = {k: np.median([t[k] for t in timings]) for k in timings[0]}
            split = ", ".join(f"{k} {v:.0f}" for k, v in parts.items() if k != "hovered")
            print(f"{model} {mode}: median ms {split}", flush=True)
        if screenshot is not None:
            page.keyboard.press("Escape")
            page.mouse.click(box["x"] + 0.45 * box["width"], box["y"] + 0.55 * box["height"])
            page.wait_for_function(f"() => window.litesamLatencies.length === {done + 1}")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot))
        browser.close()
    return latencies


def load(model: str, clients: int, requests: int, cache_size: int) -> None:
    """``clients`` threads send ``requests`` in all over loopback: a quarter uploads (three photos at three
    sizes: 9 images, more than the cache holds, so evicted ones are encoded again), the rest clicks on
    them; prints p50/p95 per kind, whether every answer was right and the server's peak RSS."""
    images = []
    for photo in sorted(PHOTO.parent.glob("*.jpg")):
        for side in (480, 800, 1080):
            pic = Image.open(photo).convert("RGB")
            pic.thumbnail((side, side))
            buf = io.BytesIO()
            pic.save(buf, format="JPEG", quality=90)
            images.append((buf.getvalue(), pic.size))
    with serving(model, cache_size) as (base, status):
        times, wrong = _load(base, images, clients, requests)
        peak = peak_rss_mib(status)
    for kind, ms in times.items():
        print(f"{model} under load ({clients} clients): {kind} p50 {np.percentile(ms, 50):.0f} ms, "
              f"p95 {np.percentile(ms, 95):.0f} ms ({len(ms)} requests)")  # fmt: skip
    print(f"{model} under load: {len(wrong)} wrong answers {wrong[:5]}; peak RSS {peak:.0f} MiB "
          f"(cache {cache_size} of {len(images)} images)")  # fmt: skip


def _load(
    base: str, images: list[tuple[bytes, tuple[int, int]]], clients: int, requests: int
) -> tuple[dict[str, list[float]], list[tuple[str, int]]]:
    """The load itself: (milliseconds per request kind, the wrong answers as (kind, status))."""
    click = {"points": [[0.0, 0.0]], "labels": [1], "format": "bits", "pick": "best"}
    ids, reference = [], {}
    for i, (data, (w, h)) in enumerate(images):  # each image's answer, while it is in the cache
        ids.append(upload(base, data, f"{i}.jpg")[1]["image_id"])
        body = {**click, "image_id": ids[i], "points": [[w / 2, h / 2]]}
        reference[i] = call(base + "/api/predict", body)[1]["masks"]
    times: dict[str, list[float]] = {"upload": [], "click": []}
    wrong = []

    def client(c: int) -> None:
        for r in range(requests // clients):
            i = (c * 7 + r * 5) % len(images)
            start = time.perf_counter()
            if r % 4 == 0:
                status, out = upload(base, images[i][0], f"{i}.jpg")
                kind, ok = "upload", status == 200 and out["image_id"] == ids[i]
            else:
                w, h = images[i][1]
                body = {**click, "image_id": ids[i], "points": [[w / 2, h / 2]]}
                status, out = call(base + "/api/predict", body)
                kind, ok = "click", (out["masks"] == reference[i]) if status == 200 else status == 404
            times[kind].append(1000 * (time.perf_counter() - start))
            if not ok:
                wrong.append((kind, status))

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return times, wrong


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobile_sam", "edge_sam", "efficientvit_sam_l0"])
    parser.add_argument("--photo", type=Path, default=PHOTO)
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument(
        "--rest", type=float, default=0.3, help="seconds the mouse rests before a rested click (0: cold only)"
    )
    parser.add_argument("--screenshot", type=Path)
    parser.add_argument("--load", action="store_true", help="also the loopback load test (no browser)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--cache-size", type=int, default=4)
    args = parser.parse_args()
    if args.load:
        for model in args.models:
            load(model, args.clients, args.requests, args.cache_size)
    for i, model in enumerate(args.models if args.clicks else []):
        latencies = measure(model, args.photo, args.clicks, args.rest, args.screenshot if i == 0 else None)
        for mode, ms in latencies.items():
            print(
                f"{model} {mode}: click->mask p50 {np.percentile(ms, 50):.0f} ms, "
                f"p95 {np.percentile(ms, 95):.0f} ms ({len(ms)} clicks)",
                flush=True,
            )


if __name__ == "__main__":
    main()

"""The page in a real browser (Playwright driving the system chromium): load, click, box, everything, COCO."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (test extra) is not installed")

from tests.web_helpers import png_bytes, running  # noqa: E402

CHROMIUM = next(
    (
        p
        for p in (
            os.environ.get("LITESAM_CHROMIUM"),
            shutil.which("chromium"),
            shutil.which("chromium-browser"),
            "/usr/bin/chromium",
        )
        if p and Path(p).is_file()
    ),
    None,
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium found (apt-get install chromium; or set LITESAM_CHROMIUM); .ci/run installs it",
)

OVERLAY_ALPHA = (
    "([x, y]) => document.getElementById('overlay').getContext('2d').getImageData(x, y, 1, 1).data[3]"
)


PREDICTS = (  # requests the page has made to /api/predict and got answers to
    "() => performance.getEntriesByType('resource').filter((e) => e.name.endsWith('/api/predict')).length"
)
ALPHA_COUNT = """(alpha) => { const c = document.getElementById('overlay');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] === alpha) n++; return n; }"""


def overlay_pixels(page) -> int:
    return page.evaluate("""() => { const c = document.getElementById('overlay');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""")


def click_at(page, x: float, y: float, **options) -> None:
    box = page.locator("#overlay").bounding_box()
    scale = page.evaluate("() => document.getElementById('overlay').getBoundingClientRect().width") / 320
    page.mouse.click(box["x"] + x * scale, box["y"] + y * scale, **options)


def test_click_box_everything_keep_and_download(tmp_path):
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes(240, 320))
    with running(points_per_side=2) as (base, _), sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 800}, accept_downloads=True)
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(base + "/")
            page.wait_for_selector("body[data-ready='1']")
            assert page.locator("#model option").count() > 1
            page.set_input_files("#file", str(image))
            page.wait_for_function("() => document.getElementById('status').textContent.includes('encoded')")
            assert overlay_pixels(page) == 0

            click_at(page, 100, 80)  # foreground point
            page.wait_for_function("() => window.litesamLatencies.length === 1")
            assert overlay_pixels(page) > 200  # the mask (and the point) appeared
            assert page.locator("#candidates button").count() == 3
            chosen = page.locator("#candidates button.chosen").inner_text()
            other = next(i for i in range(3) if not chosen.startswith(f"{i + 1}:"))
            page.locator("#candidates button").nth(other).click()  # its mask is fetched, then shown
            page.wait_for_function(
                f"() => document.querySelectorAll('#candidates button')[{other}].className === 'chosen'"
            )
            assert overlay_pixels(page) > 200

            click_at(page, 300, 220, button="right")  # background point
            page.wait_for_function("() => window.litesamLatencies.length === 2")
            page.keyboard.press("z")  # undo -> one point again
            page.wait_for_function("() => window.litesamLatencies.length === 3")
            page.keyboard.press("Escape")  # clear
            page.wait_for_function(
                "() => window.litesamLatencies.length === 3 && "
                "document.getElementById('candidates').children.length === 0"
            )
            assert overlay_pixels(page) == 0

            box = page.locator("#overlay").bounding_box()
            s = box["width"] / 320
            page.mouse.move(box["x"] + 40 * s, box["y"] + 40 * s)
            page.mouse.down()
            page.mouse.move(box["x"] + 200 * s, box["y"] + 160 * s, steps=5)
            page.mouse.up()
            page.wait_for_function("() => window.litesamLatencies.length === 4")
            assert overlay_pixels(page) > 200
            assert page.evaluate(OVERLAY_ALPHA, [40, 100]) > 0  # the yellow box edge

            page.fill("#label", "square")
            page.click("#keep")
            page.wait_for_selector("#objects li")
            assert "square" in page.inner_text("#objects")
            assert page.evaluate(ALPHA_COUNT, 90) > 200  # kept objects are drawn in their own colour

            with page.expect_download() as download:
                page.click("#download-coco")
            coco = json.loads(Path(download.value.path()).read_text())
            assert [c["name"] for c in coco["categories"]] == ["square"]
            assert coco["images"][0]["file_name"] == "photo.png" and coco["images"][0]["width"] == 320
            assert coco["annotations"][0]["area"] > 0 and len(coco["annotations"][0]["bbox"]) == 4

            page.click("#everything")
            page.wait_for_function(
                "() => /^\\d+ masks$/.test(document.getElementById('status').textContent)", timeout=60_000
            )
            assert errors == []
        finally:
            browser.close()


def test_a_resting_mouse_previews_the_mask_and_a_click_there_shows_it_at_once(tmp_path):
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes(240, 320))
    with running() as (base, _), sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            page.goto(base + "/")
            page.wait_for_selector("body[data-ready='1']")
            page.set_input_files("#file", str(image))
            page.wait_for_function("() => document.getElementById('status').textContent.includes('encoded')")
            box = page.locator("#overlay").bounding_box()
            s = box["width"] / 320
            spot = (box["x"] + 100 * s, box["y"] + 80 * s)

            page.mouse.move(*spot)  # rests: the preview is asked for and drawn faintly (alpha 80)
            page.wait_for_function(f"() => ({ALPHA_COUNT})(80) > 200")
            preview = page.evaluate(ALPHA_COUNT, 80)
            assert page.evaluate(PREDICTS) == 1 and page.evaluate("() => window.litesamLatencies.length") == 0

            page.mouse.click(*spot)  # the same spot: that request's mask, no new one
            page.wait_for_function("() => window.litesamLatencies.length === 1")
            assert page.evaluate("() => window.litesamTimings[0].hovered") == 1
            assert page.evaluate(PREDICTS) == 1
            assert page.locator("#candidates button").count() == 3
            marker = (2 * max(3, 6 / s) + 2) ** 2  # the point's disc covers a few mask pixels
            assert preview - marker <= page.evaluate(ALPHA_COUNT, 140) <= preview
            assert page.evaluate(ALPHA_COUNT, 80) == 0

            page.keyboard.press("Escape")
            page.mouse.move(box["x"] - 20, box["y"] - 20)  # off the image: no preview
            page.wait_for_function("() => document.getElementById('candidates').children.length === 0")
            page.wait_for_function(f"() => ({ALPHA_COUNT})(80) === 0")

            page.uncheck("#hover")  # no previews: resting asks nothing
            asked = page.evaluate(PREDICTS)
            page.mouse.move(*spot)
            page.wait_for_timeout(300)
            assert page.evaluate(PREDICTS) == asked and page.evaluate(ALPHA_COUNT, 80) == 0
        finally:
            browser.close()


def test_a_failed_preview_is_not_reused_and_a_failed_click_says_why(tmp_path):
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes(240, 320))
    with running() as (base, _), sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            page.goto(base + "/")
            page.wait_for_selector("body[data-ready='1']")
            page.set_input_files("#file", str(image))
            page.wait_for_function("() => document.getElementById('status').textContent.includes('encoded')")
            failing = {"left": 1}

            def predict(route):  # the next `left` predictions fail as the server says an image is gone
                if failing["left"]:
                    failing["left"] -= 1
                    route.fulfill(status=404, json={"detail": "no image abc: upload it again"})
                else:
                    route.continue_()

            page.route("**/api/predict", predict)
            box = page.locator("#overlay").bounding_box()
            spot = (box["x"] + 100 * box["width"] / 320, box["y"] + 80 * box["width"] / 320)
            page.mouse.move(*spot)
            page.wait_for_function("() => S.hover && S.hover.done")  # asked, and it failed
            assert page.evaluate(ALPHA_COUNT, 80) == 0  # no preview

            page.mouse.click(*spot)  # asks again rather than reusing the failed request
            page.wait_for_function("() => window.litesamLatencies.length === 1")
            assert page.evaluate("() => window.litesamTimings[0].hovered") == 0
            assert overlay_pixels(page) > 200

            failing["left"] = 1
            page.mouse.click(box["x"] + 200, box["y"] + 150, button="right")
            page.wait_for_function(
                "() => document.getElementById('status').textContent === 'no image abc: upload it again'"
            )
        finally:
            browser.close()

"""The web app's HTTP API on a real loopback server: every endpoint, its errors and its guards."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import litesam  # noqa: E402
from litesam.cli import main  # noqa: E402
from tests.helpers import tiny_sam  # noqa: E402
from tests.web_helpers import TINY, call, free_port, png_bytes, rle_mask, running, upload  # noqa: E402


@pytest.fixture(scope="module")
def server():
    with running(cache_size=3) as (base, app):
        yield base, app


def test_upload_then_click_gives_masks_over_the_whole_image(server):
    base, _ = server
    status, image = upload(base, png_bytes(), filename="photo.png")
    assert status == 200 and (image["width"], image["height"]) == (160, 120)
    assert image["image_id"] == hashlib.sha256(png_bytes()).hexdigest()  # content hash
    status, out = call(
        base + "/api/predict", {"image_id": image["image_id"], "points": [[50, 40]], "labels": [1]}
    )
    assert status == 200 and len(out["masks"]) == 3
    for m in out["masks"]:
        mask = rle_mask(m["rle"])
        assert mask.shape == (120, 160) and mask.sum() == m["area"] and isinstance(m["score"], float)
    status, one = call(
        base + "/api/predict",
        {
            "image_id": image["image_id"],
            "box": [10, 10, 90, 80],
            "points": [[50, 40]],
            "labels": [0],
            "multimask": False,
            "format": "png",
        },
    )
    assert status == 200 and len(one["masks"]) == 1 and "png" in one["masks"][0]


def test_every_mask_format_carries_the_same_masks(server):
    base, _ = server
    image = upload(base, png_bytes(seed=3))[1]
    click = {"image_id": image["image_id"], "points": [[60, 50]], "labels": [1]}
    out = {
        fmt: call(base + "/api/predict", {**click, "format": fmt})[1]["masks"]
        for fmt in ("rle", "png", "bits")
    }
    for rle, png, bits in zip(out["rle"], out["png"], out["bits"], strict=True):
        mask = rle_mask(rle["rle"])
        as_png = np.asarray(Image.open(io.BytesIO(base64.b64decode(png["png"])))).astype(bool)
        as_bits = np.unpackbits(np.frombuffer(base64.b64decode(bits["bits"]), np.uint8))[: mask.size]
        np.testing.assert_array_equal(as_png, mask)
        np.testing.assert_array_equal(as_bits.reshape(mask.shape).astype(bool), mask)
        ys, xs = np.nonzero(mask)
        box = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1] if len(xs) else [0] * 4
        assert rle["bbox"] == png["bbox"] == bits["bbox"] == box
        assert rle["area"] == png["area"] == bits["area"] == mask.sum()


def test_pick_returns_one_candidates_mask_and_every_score(server):
    base, _ = server
    image = upload(base, png_bytes(seed=4))[1]
    click = {"image_id": image["image_id"], "points": [[60, 50]], "labels": [1]}
    every = call(base + "/api/predict", click)[1]
    scores = [m["score"] for m in every["masks"]]
    best = call(base + "/api/predict", {**click, "pick": "best"})[1]
    assert best["scores"] == pytest.approx(scores) and len(best["masks"]) == 1
    assert best["masks"][0]["index"] == int(np.argmax(scores))
    assert best["masks"][0]["rle"] == every["masks"][int(np.argmax(scores))]["rle"]
    second = call(base + "/api/predict", {**click, "pick": 1})[1]["masks"]
    assert [m["index"] for m in second] == [1] and second[0]["rle"] == every["masks"][1]["rle"]
    status, out = call(base + "/api/predict", {**click, "pick": 3})
    assert status == 422 and "pick 3 is not a candidate" in out["detail"]


def test_same_answer_for_the_same_click_and_the_embedding_is_computed_once(server):
    base, app = server
    status, image = upload(base, png_bytes(seed=5))
    before = app.state.cache.get(image["image_id"]).states[TINY]
    click = {"image_id": image["image_id"], "points": [[20, 30], [100, 90]], "labels": [1, 0]}
    first, second = call(base + "/api/predict", click)[1], call(base + "/api/predict", click)[1]
    assert first["masks"] == second["masks"]
    assert app.state.cache.get(image["image_id"]).states[TINY] is before


def test_cache_is_bounded_and_evicted_images_must_be_uploaded_again(server):
    base, app = server
    ids = [upload(base, png_bytes(seed=10 + i))[1]["image_id"] for i in range(4)]
    assert len(app.state.cache) == 3
    status, out = call(base + "/api/predict", {"image_id": ids[0], "points": [[5, 5]], "labels": [1]})
    assert status == 404 and "upload the image first" in out["detail"]


def test_everything_gives_rle_records_largest_first(server):
    base, _ = server
    image = upload(base, png_bytes())[1]
    status, out = call(base + "/api/everything", {"image_id": image["image_id"], "points_per_side": 4})
    assert status == 200
    areas = [r["area"] for r in out["records"]]
    assert areas == sorted(areas, reverse=True)
    for r in out["records"]:
        assert rle_mask(r["segmentation"]).sum() == r["area"]


def test_models_come_from_the_registry_with_their_checkpoints(server):
    base, _ = server
    status, out = call(base + "/api/models")
    names = [m["name"] for m in out["models"]]
    assert status == 200 and out["current"] == TINY and set(names) <= set(litesam.list_models())
    assert "mobile_sam" in names and all(m["available"] for m in out["models"])  # random weights
    mobile = next(m for m in out["models"] if m["name"] == "mobile_sam")
    assert mobile["checkpoint"] == litesam.get_spec("mobile_sam").checkpoint_filename
    status, out = call(base + "/api/models/select", {"name": "no_such_model"})
    assert status == 422 and "unknown model" in out["detail"]
    assert call(base + "/api/health")[1]["status"] == "ok"
    assert "/api/predict" in call(base + "/openapi.json")[1]["paths"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"points": [[500, 40]], "labels": [1]}, 422, "outside"),
        ({"points": [[5, 4]], "labels": [1, 0]}, 422, "label"),
        ({"points": [[float("nan"), 4]], "labels": [1]}, 422, ""),
        ({}, 422, "at least one point or a box"),
        ({"box": [1, 2, 3]}, 422, ""),
        ({"points": [[5, 4]], "labels": [7]}, 422, "label"),
    ],
)
def test_bad_prompts_are_4xx_with_a_message(server, body, status, words):
    base, _ = server
    image = upload(base, png_bytes())[1]
    got, out = call(base + "/api/predict", {"image_id": image["image_id"], **body})
    assert got == status and words in json.dumps(out["detail"])


def test_uploads_are_sniffed_and_limited(tmp_path):
    with running(max_upload_bytes=20_000, max_pixels=100 * 100) as (base, _):
        status, out = upload(base, b"#!/bin/sh\necho not an image\n", filename="photo.png")
        assert status == 422 and "not an image" in out["detail"]
        status, out = upload(base, png_bytes(50, 60), filename="notes.txt")  # a PNG whatever its name
        assert status == 200 and out["width"] == 60
        flat = io.BytesIO()
        Image.new("RGB", (200, 150)).save(flat, format="PNG")  # few bytes, too many pixels
        status, out = upload(base, flat.getvalue())
        assert status == 422 and "pixels" in out["detail"]
        status, out = upload(base, os.urandom(30_000))
        assert status == 413 and "limit" in out["detail"]
        assert (
            call(
                base + "/api/predict",
                raw=b"{not json",
                method="POST",
                headers={"Content-Type": "application/json"},
            )[0]
            == 422
        )


def test_host_origin_and_traversal_guards(server):
    base, _ = server
    assert call(base + "/api/health", headers={"Host": "evil.example:8765"})[0] == 403
    assert call(base + "/", headers={"Host": "attacker.test"})[0] == 403
    image = png_bytes()
    status, out = upload(base, image, headers={"Origin": "http://evil.example"})
    assert status == 403 and "cross-origin" in out["detail"]
    assert upload(base, image, headers={"Sec-Fetch-Site": "cross-site"})[0] == 403
    port = base.rsplit(":", 1)[1]
    assert upload(base, image, headers={"Origin": f"http://127.0.0.1:{port}"})[0] == 200
    for path in [
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/..%2fapp.py",
        "/static/%2e%2e/%2e%2e/cli.py",
        "/static//etc/passwd",
        "/api/folder/images/..%2f..%2fetc%2fpasswd",
    ]:
        status, out = call(base + path)
        assert status in (404, 422), path
        assert b"def create_app" not in (out if isinstance(out, bytes) else b"")
    status, page = call(base + "/")
    assert status == 200 and b"/static/app.js" in page
    assert call(base + "/static/app.js")[0] == 200


def test_token_is_required_when_set():
    with running(token="s3cret") as (base, _):
        assert call(base + "/api/health")[0] == 401
        assert call(base + "/api/health", headers={"X-Litesam-Token": "s3cret"})[0] == 200
        assert call(base + "/api/health?token=wrong")[0] == 401
        assert call(base + "/?token=s3cret")[0] == 200


def test_remote_host_needs_an_explicit_flag(capsys):
    assert main(["serve", "--host", "0.0.0.0", "--checkpoint", "none"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


def _folder(tmp_path: Path, n: int = 3) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(n):
        (folder / f"img{i}.png").write_bytes(png_bytes(seed=i))
    return folder


def _keep(base: str, index: int, label: str) -> dict:
    opened = call(base + "/api/folder/open", {"index": index})[1]
    mask = call(
        base + "/api/predict", {"image_id": opened["image_id"], "box": [20, 20, 100, 90], "multimask": False}
    )[1]["masks"][0]
    status, kept = call(
        base + "/api/annotations", {"image_id": opened["image_id"], "rle": mask["rle"], "label": label}
    )
    assert status == 200, kept
    return kept


def test_folder_annotation_is_saved_after_every_change_and_continued(tmp_path):
    folder = _folder(tmp_path)
    out = tmp_path / "photos_annotations.json"
    with running(folder=str(folder)) as (base, _):
        listing = call(base + "/api/folder")[1]
        assert [im["name"] for im in listing["images"]] == ["img0.png", "img1.png", "img2.png"]
        assert listing["output"] == str(out)
        first = _keep(base, 0, "cat")
        coco = json.loads(out.read_text())
        assert [a["id"] for a in coco["annotations"]] == [first["id"]]
        _keep(base, 1, "dog")
        second = _keep(base, 1, "cat")
        assert call(base + f"/api/annotations/{first['id']}", method="DELETE")[0] == 200
        assert call(base + "/api/annotations/999", method="DELETE")[0] == 422
        assert call(base + "/api/folder/images/7")[0] == 404
        assert call(base + "/api/folder/images/1")[1] == (folder / "img1.png").read_bytes()
    coco = json.loads(out.read_text())
    assert {c["name"] for c in coco["categories"]} == {"cat", "dog"}
    assert len(coco["annotations"]) == 2 and {i["file_name"] for i in coco["images"]} >= {"img1.png"}
    with running(folder=str(folder), output=str(out)) as (base, _):
        listing = call(base + "/api/folder")[1]
        assert [im["objects"] for im in listing["images"]] == [0, 2, 0]
        opened = call(base + "/api/folder/open", {"index": 1})[1]
        assert {o["id"] for o in opened["objects"]} >= {second["id"]}
        assert call(base + "/api/annotations/coco")[1]["annotations"] == coco["annotations"]


def test_pycocotools_reads_the_file(tmp_path):
    mask_api = pytest.importorskip("pycocotools.mask")
    folder = _folder(tmp_path, 1)
    with running(folder=str(folder)) as (base, _):
        kept = _keep(base, 0, "thing")
    coco = json.loads((tmp_path / "photos_annotations.json").read_text())
    ann = coco["annotations"][0]
    rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}
    assert int(mask_api.area(rle)) == ann["area"] == kept["area"]
    assert [int(v) for v in mask_api.toBbox(rle)] == ann["bbox"]


def test_killed_server_loses_nothing_kept(tmp_path):
    folder = _folder(tmp_path, 2)
    out = tmp_path / "out.json"
    port = free_port()
    script = (
        "import sys; sys.path.insert(0, '.');"
        "from tests.web_helpers import register_tiny, TINY; register_tiny();"
        "from litesam.server.app import Settings, serve;"
        f"serve(Settings(model=TINY, random_weights=True, port={port}, folder={str(folder)!r},"
        f" output={str(out)!r}, log_level='warning'))"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[1])
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if call(base + "/api/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
            time.sleep(0.1)
        ids = [_keep(base, i % 2, f"k{i}")["id"] for i in range(4)]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    coco = json.loads(out.read_text())
    assert [a["id"] for a in coco["annotations"]] == ids


def test_fresh_machine_starts_without_checkpoint_and_takes_a_dropped_one(tmp_path, monkeypatch):
    monkeypatch.setenv("LITESAM_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    weights = tmp_path / "tiny_ckpt.pth"
    torch.save(tiny_sam(seed=3).state_dict(), weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    name = "tiny_web_ckpt"
    if name not in litesam.list_models():
        litesam.register_model(
            litesam.ModelSpec(
                name, build=lambda t: tiny_sam(), source="tests", sha256=digest, filename="tiny_ckpt.pth"
            )
        )
    with running(model=name, random_weights=False) as (base, _):
        health = call(base + "/api/health")[1]
        assert health["model"] is None and "tiny_ckpt.pth" in health["model_error"]
        info = next(m for m in call(base + "/api/models")[1]["models"] if m["name"] == name)
        assert not info["available"] and info["checkpoint_path"] == str(tmp_path / "home" / "tiny_ckpt.pth")
        status, out = upload(base, png_bytes())
        assert status == 422 and "no model is loaded" in out["detail"]
        status, out = upload(
            base,
            b"not a checkpoint",
            filename="tiny_ckpt.pth",
            path="/api/checkpoints",
            extra={"model": name},
        )
        assert status == 422 and "SHA-256" in out["detail"]
        assert not (tmp_path / "home" / "tiny_ckpt.pth").exists()
        status, out = upload(
            base,
            weights.read_bytes(),
            filename="tiny_ckpt.pth",
            path="/api/checkpoints",
            extra={"model": name},
        )
        assert status == 200 and out["current"] == name
        assert (tmp_path / "home" / "tiny_ckpt.pth").read_bytes() == weights.read_bytes()
        assert upload(base, png_bytes())[0] == 200


def test_concurrent_clients_get_correct_answers_and_memory_stays_bounded():
    """A bounded load: 4 clients, 160 requests mixing uploads of 12 images and clicks on them."""
    with running(cache_size=4) as (base, app):
        images = [png_bytes(seed=100 + i) for i in range(12)]
        ids = [hashlib.sha256(b).hexdigest() for b in images]
        click = {"points": [[40, 30]], "labels": [1], "multimask": False}
        reference = {}
        for i in range(12):
            upload(base, images[i])
            reference[i] = call(base + "/api/predict", {"image_id": ids[i], **click})[1]["masks"]

        def client(c: int) -> list[bool]:
            ok = []
            for r in range(40):
                i = (c * 5 + r) % 12
                if r % 3 == 0:
                    status, out = upload(base, images[i])
                    ok.append(status == 200 and out["image_id"] == ids[i])
                else:
                    status, out = call(base + "/api/predict", {"image_id": ids[i], **click})
                    ok.append(out["masks"] == reference[i] if status == 200 else status == 404)
                assert len(app.state.cache) <= 4
            return ok

        with ThreadPoolExecutor(4) as pool:
            results = [ok for oks in pool.map(client, range(4)) for ok in oks]
        assert len(results) == 160 and all(results)
        assert len(app.state.cache) <= 4
        assert np.isfinite(call(base + "/api/health")[1]["last_encode_ms"])

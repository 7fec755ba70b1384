"""A real litesam server on a free loopback port, for API and browser tests."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image

import litesam
from litesam.server.app import Settings, create_app
from tests.helpers import photo, tiny_sam

TINY = "tiny_web_sam"


def register_tiny() -> None:
    """A tiny random SAM in the registry (no checkpoint anywhere)."""
    if TINY not in litesam.list_models():
        litesam.register_model(litesam.ModelSpec(TINY, build=lambda transform: tiny_sam(), source="tests"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(**settings: Any) -> Iterator[tuple[str, Any]]:
    """Start the app (tiny random model unless told otherwise) on 127.0.0.1; yields (base URL, app)."""
    import uvicorn

    register_tiny()
    settings = {
        "model": TINY,
        "random_weights": True,
        "port": free_port(),
        "log_level": "warning",
        **settings,
    }
    app = create_app(Settings(**settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings["port"], log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{settings['port']}", app
    finally:
        server.should_exit = True
        thread.join(10)


def png_bytes(h: int = 120, w: int = 160, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo(h, w, seed)).save(buf, format="PNG")
    return buf.getvalue()


def call(
    url: str,
    body: Any = None,
    method: str | None = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    """(status, decoded JSON or bytes) of one request; ``body`` is sent as JSON."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    hdrs.update(headers or {})
    request = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            status, payload, kind = r.status, r.read(), r.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        status, payload, kind = e.code, e.read(), e.headers.get("content-type", "")
    return status, json.loads(payload) if "json" in kind else payload


def upload(
    base: str,
    data: bytes,
    filename: str = "photo.png",
    field: str = "file",
    extra: dict[str, str] | None = None,
    path: str = "/api/images",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """POST ``data`` as multipart field ``field`` (plus form fields ``extra``)."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in (extra or {}).items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    raw = b"".join(parts) + f"--{boundary}--\r\n".encode()
    hdrs = {"Content-Type": f"multipart/form-data; boundary={boundary}", **(headers or {})}
    return call(base + path, raw=raw, method="POST", headers=hdrs)


def rle_mask(rle: dict[str, Any]) -> np.ndarray:
    return litesam.utils.amg.rle_to_mask(rle)

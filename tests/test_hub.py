"""Checkpoint hub: resumable, verified downloads against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import random
import re
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import pytest

from litesam import hub

PAYLOAD = random.Random(0).randbytes(300_000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
CHUNK = 16 * 1024


class FileServer(ThreadingHTTPServer):
    """Serves ``payload`` at any path except /missing; records each request's Range header (None if absent).

    ``ranges``: honour ``Range: bytes=N-`` (206/416) or always answer 200 with the whole file.
    ``cut_after`` / ``stall_after``: on the next request only, close the connection or stop sending (without
    closing) after that many body bytes, while Content-Length announces the full body.
    """

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.payload = PAYLOAD
        self.ranges = True
        self.cut_after: int | None = None
        self.stall_after: int | None = None
        self.seen_ranges: list[str | None] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/weights/model.pt"


class RangeHandler(BaseHTTPRequestHandler):
    server: FileServer

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""

    def do_GET(self) -> None:
        srv, payload = self.server, self.server.payload
        requested = self.headers.get("Range")
        srv.seen_ranges.append(requested)
        if self.path == "/missing":
            self.send_error(404)
            return
        start = int(re.fullmatch(r"bytes=(\d+)-", requested).group(1)) if srv.ranges and requested else 0
        if start >= len(payload) and requested:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(payload)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = payload[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut, stall = srv.cut_after, srv.stall_after
        srv.cut_after = srv.stall_after = None
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        elif stall is not None:
            self.wfile.write(body[:stall])
            self.wfile.flush()
            time.sleep(0.6)
        else:
            self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[FileServer]:
    srv = FileServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITESAM_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("LITESAM_OFFLINE", raising=False)


def part_of(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def fetch(url: str, dest: Path, sha256: str | None = DIGEST) -> Path:
    return hub.download(url, dest, sha256, progress=True, chunk=CHUNK, timeout=0.3, name="sam_vit_b")


def test_download_verifies_checksum_and_shows_progress(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "nested" / "model.pt"
    assert fetch(server.url, dest) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not part_of(dest).exists()
    assert server.seen_ranges == [None]


def test_checksum_mismatch_raises_and_leaves_no_file(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "model.pt"
    wrong = "0" * 64
    with pytest.raises(hub.ChecksumError) as info:
        fetch(server.url, dest, sha256=wrong)
    message = str(info.value)
    assert wrong in message and DIGEST in message and server.url in message
    assert not dest.exists() and not part_of(dest).exists()


@pytest.mark.parametrize("failure", ["connection closed", "read timeout"])
def test_interrupted_download_keeps_part_and_resumes_with_range(
    server: FileServer, tmp_path: Path, failure: str
) -> None:
    dest = tmp_path / "model.pt"
    if failure == "connection closed":
        server.cut_after = 100_000
    else:
        server.stall_after = 100_000
    with pytest.raises(hub.DownloadError) as info:
        fetch(server.url, dest)
    assert not isinstance(info.value, hub.ChecksumError)
    assert str(part_of(dest)) in str(info.value) and "--checkpoint" in str(info.value)
    kept = part_of(dest).read_bytes()
    assert 0 < len(kept) <= 100_000 and PAYLOAD.startswith(kept)
    assert not dest.exists()

    fetch(server.url, dest)
    assert server.seen_ranges == [None, f"bytes={len(kept)}-"]
    assert dest.read_bytes() == PAYLOAD
    assert not part_of(dest).exists()


def test_server_ignoring_range_restarts_from_zero(server: FileServer, tmp_path: Path) -> None:
    server.ranges = False
    dest = tmp_path / "model.pt"
    part_of(dest).write_bytes(b"stale bytes that must not end up in the file")
    fetch(server.url, dest)
    assert server.seen_ranges == ["bytes=44-"]
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize("extra", [0, 7], ids=["complete part", "oversized part"])
def test_range_not_satisfiable_completes_or_restarts(server: FileServer, tmp_path: Path, extra: int) -> None:
    dest = tmp_path / "model.pt"
    part_of(dest).write_bytes(PAYLOAD + b"x" * extra)
    fetch(server.url, dest)
    size = len(PAYLOAD) + extra
    assert server.seen_ranges == ([f"bytes={size}-"] if extra == 0 else [f"bytes={size}-", None])
    assert dest.read_bytes() == PAYLOAD


def test_offline_mode_makes_no_request_and_says_where_to_put_the_file(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LITESAM_OFFLINE", "1")
    dest = tmp_path / "model.pt"
    with pytest.raises(hub.DownloadError) as info:
        fetch(server.url, dest)
    assert str(dest) in str(info.value) and "--checkpoint" in str(info.value)
    assert server.seen_ranges == []


def test_unreachable_server_says_where_to_put_the_file(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was just free: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dest = tmp_path / "model.pt"
    with pytest.raises(hub.DownloadError) as info:
        fetch(f"http://127.0.0.1:{port}/model.pt", dest)
    assert str(dest) in str(info.value) and "--checkpoint" in str(info.value)
    assert not dest.exists()


def test_http_error_is_reported_with_status(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(hub.DownloadError, match="HTTP 404"):
        fetch(server.url.rsplit("/", 2)[0] + "/missing", tmp_path / "model.pt")


def test_fetch_checkpoint_reuses_verified_cache(server: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    path = hub.fetch_checkpoint("sam_vit_b", server.url, "model.pt", DIGEST, progress=False)
    assert path == hub.cache_dir() / "model.pt" and path.read_bytes() == PAYLOAD
    with monkeypatch.context() as patch:  # second call: no request and no re-hashing
        patch.setattr(hub, "_hasher", lambda *_: pytest.fail("cached file was hashed again"))
        assert hub.fetch_checkpoint("sam_vit_b", server.url, "model.pt", DIGEST) == path
    assert server.seen_ranges == [None]


def test_fetch_checkpoint_rechecks_a_changed_cache_file(server: FileServer) -> None:
    path = hub.fetch_checkpoint("sam_vit_b", server.url, "model.pt", DIGEST, progress=False)
    path.write_bytes(PAYLOAD[::-1])
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
    with pytest.raises(hub.ChecksumError, match="Delete it"):
        hub.fetch_checkpoint("sam_vit_b", server.url, "model.pt", DIGEST)
    assert server.seen_ranges == [None]


def test_fetch_checkpoint_verifies_a_file_put_there_by_hand(server: FileServer) -> None:
    path = hub.cache_dir() / "model.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(PAYLOAD)
    assert hub.fetch_checkpoint("sam_vit_b", server.url, "model.pt", DIGEST) == path
    assert server.seen_ranges == []


def test_fetch_checkpoint_extracts_a_zipped_checkpoint_once(server: FileServer) -> None:
    archive = BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("model.pt", PAYLOAD)
    server.payload = archive.getvalue()
    digest = hashlib.sha256(server.payload).hexdigest()
    path = hub.fetch_checkpoint("efficient_sam_vits", server.url, "model.pt.zip", digest, member="model.pt")
    assert path == hub.cache_dir() / "model.pt" and path.read_bytes() == PAYLOAD
    assert (
        hub.fetch_checkpoint("efficient_sam_vits", server.url, "model.pt.zip", digest, member="model.pt")
        == path
    )
    assert server.seen_ranges == [None]
    with pytest.raises(hub.DownloadError, match="no member 'other.pt'"):
        hub.fetch_checkpoint("efficient_sam_vits", server.url, "model.pt.zip", digest, member="other.pt")


def test_fetch_checkpoint_without_url_says_where_to_put_the_file() -> None:
    with pytest.raises(hub.DownloadError) as info:
        hub.fetch_checkpoint("efficient_sam_vitt", None, "model.pt", DIGEST)
    assert str(hub.cache_dir() / "model.pt") in str(info.value) and "--checkpoint" in str(info.value)


def test_cache_dir_default_and_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert hub.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("LITESAM_HOME")
    assert hub.cache_dir() == Path.home() / ".cache" / "litesam"


def test_without_a_checksum_a_part_file_is_never_resumed(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "model.pt"
    part_of(dest).write_bytes(b"bytes of some other file, which nothing can tell apart")
    fetch(server.url, dest, sha256=None)
    assert server.seen_ranges == [None]  # restarted from zero, no Range request
    assert dest.read_bytes() == PAYLOAD


def test_without_a_checksum_an_interrupted_download_keeps_nothing(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "model.pt"
    server.cut_after = 100_000
    with pytest.raises(hub.DownloadError) as info:
        fetch(server.url, dest, sha256=None)
    assert not part_of(dest).exists() and not dest.exists()
    assert "resume" not in str(info.value)


def _a_file(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("")
    return tmp_path / "file"


def _read_only_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


UNUSABLE_HOMES = {
    "a file": _a_file,
    "missing parent": lambda tmp: tmp / "no" / "cache",
    "not writable (/proc)": lambda tmp: Path("/proc/litesam-cache"),
    "read-only folder": _read_only_folder,
}


@pytest.mark.parametrize("kind", list(UNUSABLE_HOMES))
def test_an_unusable_litesam_home_is_named_and_no_file_is_asked_to_be_saved_there(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    if kind == "read-only folder" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    home = UNUSABLE_HOMES[kind](tmp_path)
    monkeypatch.setenv("LITESAM_HOME", str(home))
    for offline in ("", "1"):
        monkeypatch.setenv("LITESAM_OFFLINE", offline)
        with pytest.raises(hub.DownloadError) as info:
            hub.fetch_checkpoint("sam_vit_b", server.url, "model.pt", DIGEST)
        message = str(info.value)
        assert f"LITESAM_HOME={home} cannot hold downloads" in message and "--checkpoint PATH" in message
        assert "save it as" not in message
    assert server.seen_ranges == [] and not (tmp_path / "no").exists()

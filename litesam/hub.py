"""Checkpoint download and cache: resumable HTTP download with SHA-256 verification.

Files land in :func:`cache_dir` (``$LITESAM_HOME`` or ``~/.cache/litesam``). A download streams into
``<file>.part`` and is renamed atomically once its checksum matches, so the cache never holds a partial
file under its final name. An interrupted download keeps the ``.part`` and resumes it with an HTTP
``Range`` request on the next call, if the file has a published SHA-256 to prove the result (without one,
a ``.part`` is never trusted: the download restarts from zero). ``LITESAM_OFFLINE=1`` forbids any network
access.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from email.message import Message
from pathlib import Path

from tqdm.auto import tqdm

from .errors import LitesamError, OutputError
from .utils.io import atomic_write, atomic_write_text, durable_replace, writable_folder

MiB = 1 << 20
_USER_AGENT = "litesam-hub/0.1 (+urllib)"


class DownloadError(LitesamError, RuntimeError):
    """A checkpoint could not be fetched (network failure, HTTP error, offline mode)."""


class ChecksumError(DownloadError):
    """A file's SHA-256 differs from the expected one."""


def cache_dir() -> Path:
    """Checkpoint cache folder: ``$LITESAM_HOME`` if set, else ``~/.cache/litesam``."""
    home = os.environ.get("LITESAM_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "litesam"


def offline() -> bool:
    """True when ``LITESAM_OFFLINE`` is set to a true value (1/true/yes/on)."""
    return os.environ.get("LITESAM_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _hasher(path: Path, chunk: int = MiB) -> hashlib._Hash:
    """A sha256 hash object fed with all bytes of ``path`` (read ``chunk`` bytes at a time)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest


def file_sha256(path: Path, chunk: int = MiB) -> str:
    """Hex SHA-256 of a file's bytes."""
    return _hasher(path, chunk).hexdigest()


def _by_hand(url: str, dest: Path, name: str | None) -> str:
    """The 'how to do without this download' part of an error message."""
    build = f'build_model("{name}", checkpoint=PATH)' if name else "checkpoint=PATH"
    return (
        f"Download {url} by hand and save it as {dest}, "
        f"or pass --checkpoint PATH on the command line ({build} in Python)."
    )


def _part_path(dest: Path) -> Path:
    return dest.with_suffix(dest.suffix + ".part")


def _content_range(headers: Message) -> tuple[int | None, int | None]:
    """(first byte, full size) from ``Content-Range: bytes a-b/N`` or ``bytes */N``; None where absent."""
    match = re.fullmatch(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", headers.get("Content-Range", "").strip())
    if not match:
        return None, None
    first, total = match.groups()
    return (None if first is None else int(first)), (None if total == "*" else int(total))


def _total_size(response: http.client.HTTPResponse, offset: int) -> int | None:
    """Full file size in bytes from Content-Range, else offset + Content-Length; None if unknown."""
    total = _content_range(response.headers)[1]
    if total is not None:
        return total
    length = response.headers.get("Content-Length", "")
    return offset + int(length) if length.isdigit() else None


def _stream(
    response: http.client.HTTPResponse,
    part: Path,
    offset: int,
    update: Callable[[bytes], None],
    chunk: int,
    progress: bool,
) -> int:
    """Write the response body into ``part`` after its first ``offset`` bytes; returns the final size.

    ``update`` (a hash's ``update``) is called with every block written. Raises ConnectionError when the body
    ends before the announced size.
    """
    total = _total_size(response, offset)
    size = offset
    with (
        open(part, "ab" if offset else "wb") as f,
        tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.name.removesuffix(".part"),
            disable=not progress,
            leave=False,
        ) as bar,
    ):
        while block := response.read1(chunk):  # read1: what has arrived, so a timeout loses nothing
            f.write(block)
            update(block)
            size += len(block)
            bar.update(len(block))
        f.flush()
        os.fsync(f.fileno())
    if total is not None and size != total:
        raise ConnectionError(f"connection closed after {size} of {total} bytes")
    return size


def _transfer(url: str, part: Path, chunk: int, timeout: float, progress: bool) -> tuple[int, str]:
    """Complete ``part`` from ``url``, resuming it with a Range request; returns (size in bytes, hex sha256).

    A server that ignores Range (200, or a 206 for another offset) restarts the file from byte 0; a 416
    means the ``.part`` already holds the whole file, or, if its size disagrees, that it must be redone.
    """
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not offset:
            raise
        total = _content_range(err.headers)[1]
        err.close()
        if total == offset:
            return offset, _hasher(part, chunk).hexdigest()
        part.unlink()
        return _transfer(url, part, chunk, timeout, progress)
    with response:
        resumed = offset > 0 and response.status == 206 and _content_range(response.headers)[0] == offset
        digest = _hasher(part, chunk) if resumed else hashlib.sha256()
        size = _stream(response, part, offset if resumed else 0, digest.update, chunk, progress)
    return size, digest.hexdigest()


def download(
    url: str,
    dest: Path,
    sha256: str | None,
    *,
    progress: bool = True,
    chunk: int = MiB,
    timeout: float = 60.0,
    name: str | None = None,
) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part`` if present, and verify its SHA-256.

    ``sha256``: expected hex digest, or None to skip verification (then a ``.part`` is neither resumed nor
    kept: its bytes could not be proven). ``chunk``: read size in bytes. ``timeout``: seconds per socket
    operation. ``name``: model name, only used in error messages. Raises :class:`ChecksumError` (and
    deletes the ``.part``) on a digest mismatch, and :class:`DownloadError` on network/HTTP failures or in
    offline mode (the ``.part`` is kept for a resume). Returns ``dest``.
    """
    dest = Path(dest)
    part = _part_path(dest)
    if offline():
        raise DownloadError(f"LITESAM_OFFLINE is set, not downloading {url}. {_by_hand(url, dest, name)}")
    writable_folder(dest.parent)
    if sha256 is None:
        part.unlink(missing_ok=True)
    try:
        size, got = _transfer(url, part, chunk, timeout, progress)
    except (OSError, http.client.HTTPException) as err:
        if sha256 is None:
            part.unlink(missing_ok=True)
        kept = part.stat().st_size if part.exists() else 0
        reason = f"HTTP {err.code} {err.reason}" if isinstance(err, urllib.error.HTTPError) else repr(err)
        resume = f"{kept} bytes are kept in {part}; run again to resume. " if kept else ""
        hint = _by_hand(url, dest, name)
        raise DownloadError(f"Download of {url} failed: {reason}. {resume}{hint}") from err
    if sha256 is not None and got != sha256.lower():
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"Checksum mismatch for {url} ({size} bytes): expected sha256 {sha256.lower()}, got {got}. "
            f"The partial file was deleted; run again to re-download. {_by_hand(url, dest, name)}"
        )
    durable_replace(part, dest)
    return dest


def _sidecar(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".sha256")


def _stamp(path: Path, sha256: str) -> dict[str, int | str]:
    stat = path.stat()
    return {"sha256": sha256.lower(), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _verified_before(path: Path, sha256: str) -> bool:
    """True if the sidecar records ``sha256`` for this exact size and mtime of ``path``."""
    try:
        return json.loads(_sidecar(path).read_text()) == _stamp(path, sha256)
    except (OSError, ValueError):
        return False


def _remember_verified(path: Path, sha256: str) -> None:
    """Record that ``path`` (at its current size and mtime) has digest ``sha256``; best effort (a shared,
    read-only cache is fine)."""
    try:
        atomic_write_text(_sidecar(path), json.dumps(_stamp(path, sha256)))
    except OutputError:
        pass


def _verified_cache(name: str, url: str | None, dest: Path, sha256: str | None) -> Path:
    """``dest`` once its digest is known to be ``sha256`` (hashed at most once per size+mtime)."""
    if sha256 is None or _verified_before(dest, sha256):
        return dest
    got = file_sha256(dest)
    if got != sha256.lower():
        raise ChecksumError(
            f"Cached checkpoint {dest} for {name!r} has sha256 {got}, expected {sha256.lower()}. "
            f"Delete it to download it again from {url}, or pass --checkpoint PATH "
            f'(build_model("{name}", checkpoint=PATH) in Python).'
        )
    _remember_verified(dest, sha256)
    return dest


def _extract(archive: Path, member: str) -> Path:
    """Extract ``member`` of zip ``archive`` next to it (once, atomically); returns the extracted path."""
    target = archive.with_name(Path(member).name)
    if target.is_file():
        return target
    try:
        with zipfile.ZipFile(archive) as zf:
            if member not in zf.namelist():
                raise DownloadError(f"{archive} has no member {member!r} (it holds {zf.namelist()})")
            with zf.open(member) as src:
                atomic_write(target, lambda dst: shutil.copyfileobj(src, dst, MiB))
    except zipfile.BadZipFile as err:
        raise DownloadError(
            f"{archive} is not a valid zip archive ({err}); delete it to download again"
        ) from err
    return target


def _writable_cache() -> Path:
    """:func:`cache_dir`, created if needed and proven writable; else a DownloadError naming it. A
    ``$LITESAM_HOME`` whose parent folder is missing is not created (a typo, most likely)."""
    home = os.environ.get("LITESAM_HOME")
    try:
        return writable_folder(cache_dir(), parents=not home)
    except OutputError as e:
        where = f"LITESAM_HOME={home}" if home else f"the checkpoint cache {cache_dir()}"
        raise DownloadError(
            f"{where} cannot hold downloads: {e}. Set LITESAM_HOME to a writable folder, or pass"
            " --checkpoint PATH (checkpoint=PATH in Python) with a checkpoint file you have."
        ) from e


def fetch_checkpoint(
    name: str,
    url: str | None,
    filename: str,
    sha256: str | None,
    *,
    member: str | None = None,
    progress: bool = True,
) -> Path:
    """Path of checkpoint ``filename`` in :func:`cache_dir`, downloading it from ``url`` when absent.

    A cached file is hashed once; the result is remembered in a ``<filename>.sha256`` sidecar keyed by
    size and mtime, so later calls do not re-read it. A cached file with the wrong digest raises
    :class:`ChecksumError` (it is left in place: it may have been put there by hand). ``member``: the
    checkpoint is that file inside the zip archive ``filename`` (``sha256`` is the archive's); it is
    extracted next to the archive once and its path returned. ``url`` None: no official download exists,
    so a missing file raises :class:`DownloadError` saying where to put it. A missing file whose cache
    folder cannot take it (a file, not writable, or a ``$LITESAM_HOME`` whose parent folder does not
    exist) raises :class:`DownloadError` naming the folder.
    """
    dest = cache_dir() / filename
    if dest.is_file():
        path = _verified_cache(name, url, dest, sha256)
    else:
        _writable_cache()  # before saying where to put the file
        if url is None:
            raise DownloadError(
                f"No download URL is known for {name!r}. Save its official checkpoint as {dest}, "
                f'or pass --checkpoint PATH (build_model("{name}", checkpoint=PATH) in Python).'
            )
        path = download(url, dest, sha256, progress=progress, name=name)
        if sha256 is not None:
            _remember_verified(path, sha256)
    return path if member is None else _extract(path, member)

"""Files: atomic writes, output folder checks, lock files, and finding the images to process.

Atomic writes go to a temporary file in the target's folder, are flushed and fsync'd, renamed over the
target with ``os.replace`` and the folder is fsync'd (where the OS allows): a reader, or a run after a
crash or a kill, sees the old file or the new one, never half of one. A failed write removes its temporary
file and raises :class:`~litesam.errors.OutputError`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from PIL import Image

from ..errors import InputError, OutputError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
# A lock file that is still empty or unreadable after this many seconds was left by a writer that died.
_UNFINISHED_LOCK_S = 10.0


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Create or replace ``path`` with what ``write`` writes into the binary file it is given; atomic and
    durable (see the module docstring). Missing parent folders are created. Returns ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        durable_replace(tmp, path)
    except OSError as e:
        if e.errno is None:  # not the file system's answer (e.g. PIL refusing an image mode): a bug
            raise
        raise OutputError(f"cannot write {path}: {e.strerror}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = 1) -> Path:
    """Atomically write ``data`` as JSON to ``path``."""
    return atomic_write_text(path, json.dumps(data, indent=indent))


def atomic_write_png(path: str | os.PathLike, picture: Image.Image) -> Path:
    """Atomically write ``picture`` as a PNG to ``path``."""
    return atomic_write(path, lambda f: picture.save(f, format="PNG"))


def atomic_torch_save(obj: object, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)``, atomically (a killed save leaves the previous file intact)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling of ``path`` (same suffix) for a writer that takes a file name (an exporter):
    fsync'd and renamed over ``path`` when the block ends normally, removed otherwise. Nested blocks for
    files of one stem (``x.xml`` + ``x.bin``) get temporaries of one stem too and are renamed inner first."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        durable_replace(tmp, path)
    except OSError as e:
        if e.errno is None:
            raise
        raise OutputError(f"cannot write {path}: {e.strerror}") from e
    finally:
        tmp.unlink(missing_ok=True)


def durable_replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """``os.replace(src, dst)``, then fsync ``dst``'s folder so that the rename survives a crash.
    ``src``'s content must already be fsync'd."""
    os.replace(src, dst)
    with contextlib.suppress(OSError):  # folders cannot be opened on Windows, some file systems refuse
        fd = os.open(Path(dst).parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def writable_folder(folder: str | os.PathLike, parents: bool = True) -> Path:
    """``folder``, created if missing (with missing parents unless ``parents`` is False) and proven
    writable by creating and removing a probe file in it; an :class:`OutputError` saying why otherwise."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is a file, not a folder")
    if not parents and not folder.parent.is_dir():
        raise OutputError(f"cannot create folder {folder}: its parent {folder.parent} does not exist")
    try:
        folder.mkdir(parents=parents, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create folder {folder}: {e.strerror}") from e
    probe = folder / f".litesam-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        probe.open("xb").close()
        probe.unlink()
    except OSError as e:
        raise OutputError(f"cannot write in folder {folder}: {e.strerror}") from e
    return folder


def try_lock(path: str | os.PathLike) -> bool:
    """Take the lock file ``path``: created with ``O_CREAT | O_EXCL`` and holding this process's pid and
    host. False while another live process holds it. A lock left by a process of this host that no longer
    runs is taken over (on Windows, where liveness is not checked, it must be deleted by hand)."""
    path = Path(path)
    for _ in range(3):  # a lock released or broken meanwhile: try again
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            text = _lock_text(path)
            if text is None:  # released meanwhile
                continue
            if not _stale(path, text):
                return False
            _break(path, text)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(_identity())
        return True
    return False


def release_lock(path: str | os.PathLike) -> None:
    """Remove the lock file ``path`` if this process holds it."""
    path = Path(path)
    if _lock_text(path) == _identity():
        path.unlink(missing_ok=True)


def _identity() -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname()})


def _lock_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _stale(path: Path, text: str) -> bool:
    """Whether the lock ``path`` holding ``text`` was left by a process that is gone."""
    try:
        owner = json.loads(text)
        pid, host = int(owner["pid"]), str(owner["host"])
    except (ValueError, TypeError, KeyError):  # not filled in yet, or its writer died before filling it
        with contextlib.suppress(FileNotFoundError):
            return time.time() - path.stat().st_mtime > _UNFINISHED_LOCK_S
        return False
    return host == socket.gethostname() and not _running(pid)


def _running(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _break(path: Path, text: str) -> None:
    """Remove the stale lock ``path`` if it still holds ``text``. The marker file, created with
    ``O_EXCL``, lets one process at a time do this, so a fresh lock taken meanwhile is never removed."""
    marker = path.with_name(f"{path.name}.{zlib.crc32(text.encode()):08x}.breaking")
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return
    try:
        if _lock_text(path) == text:
            path.unlink(missing_ok=True)
    finally:
        marker.unlink(missing_ok=True)


@dataclass(frozen=True)
class ImageJob:
    """One input image: its ``path`` and the output ``name`` (posix path relative to the output folder,
    without suffix)."""

    path: Path
    name: str


def find_images(
    paths: Sequence[str | os.PathLike], recursive: bool = False, exclude: str | os.PathLike | None = None
) -> list[ImageJob]:
    """Files and folders -> the images to process, in a stable order.

    A file is taken as given (even a corrupt one: it is reported when processed); a folder contributes its
    files with an image suffix (``IMAGE_SUFFIXES``), with subfolders when ``recursive``, except those
    inside ``exclude`` (the output folder, whose overlays are no inputs). Output names are
    the paths relative to the folder, without suffix; where two images would share a name (``a.jpg``,
    ``a.png``), or an image is called ``summary``, the suffix is kept in it (``a_jpg``, ``a_png``).
    A path that does not exist is an :class:`InputError`.
    """
    found: list[tuple[Path, Path]] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            pattern = entry.rglob("*") if recursive else entry.glob("*")
            files = sorted(
                p
                for p in pattern
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not _inside(p, exclude)
            )
            found.extend((p, p.relative_to(entry)) for p in files)
        elif entry.is_file():
            found.append((entry, Path(entry.name)))
        else:
            raise InputError(f"no such file or folder: {entry}")
    stems = [rel.with_suffix("").as_posix() for _, rel in found]
    clash = {s for s in stems if stems.count(s) > 1} | {"summary"}  # summary.json is the run's own file
    return [
        ImageJob(path, f"{stem}_{rel.suffix.lstrip('.').lower()}" if stem in clash else stem)
        for (path, rel), stem in zip(found, stems, strict=True)
    ]


def _inside(path: Path, folder: str | os.PathLike | None) -> bool:
    return folder is not None and Path(folder).resolve() in path.resolve().parents

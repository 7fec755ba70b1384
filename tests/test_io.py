"""File helpers: atomic writes leave the old file or the new one, output folders are checked, lock files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from litesam.errors import OutputError
from litesam.utils.io import (
    atomic_torch_save,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    release_lock,
    try_lock,
    writable_folder,
)


def test_atomic_writes_create_parents_and_replace_the_old_content(tmp_path):
    path = tmp_path / "a" / "b" / "doc.json"
    atomic_write_json(path, {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert os.listdir(path.parent) == ["doc.json"]  # no temporary file left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("old")

    def half_then_crash(f):
        f.write(b"half of the new content")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_crash)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["doc.txt"]


def test_a_file_system_refusal_is_an_output_error_but_a_bug_stays_a_bug(tmp_path):
    (tmp_path / "doc.txt").mkdir()
    with pytest.raises(OutputError, match="cannot write .*doc.txt: Is a directory"):
        atomic_write_text(tmp_path / "doc.txt", "text")

    def refuse(f):
        raise OSError("cannot write mode P as PNG")  # no errno: the caller's mistake, not the disk's

    with pytest.raises(OSError, match="mode P") as err:
        atomic_write(tmp_path / "picture.png", refuse)
    assert not isinstance(err.value, OutputError)
    assert sorted(os.listdir(tmp_path)) == ["doc.txt"]


def test_atomic_torch_save_round_trips(tmp_path):
    state = {"w": torch.arange(6.0).view(2, 3), "meta": {"step": 3}}
    atomic_torch_save(state, tmp_path / "last.pt")
    loaded = torch.load(tmp_path / "last.pt", weights_only=True)
    assert torch.equal(loaded["w"], state["w"]) and loaded["meta"] == {"step": 3}


def test_writable_folder_creates_or_explains(tmp_path):
    assert writable_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir() and os.listdir(tmp_path / "a" / "b") == []  # probe removed
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="file is a file, not a folder"):
        writable_folder(tmp_path / "file")
    with pytest.raises(OutputError, match="cannot create folder .*file/sub"):
        writable_folder(tmp_path / "file" / "sub")
    with pytest.raises(OutputError, match="its parent .*missing does not exist"):
        writable_folder(tmp_path / "missing" / "cache", parents=False)
    assert not (tmp_path / "missing").exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_writable_folder_proves_that_files_can_be_made():
    with pytest.raises(OutputError, match="cannot write in folder /proc/self"):
        writable_folder("/proc/self")


def dead_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def lock_text(pid: int, host: str | None = None) -> str:
    return json.dumps({"pid": pid, "host": host or socket.gethostname()})


def test_a_lock_is_held_once_and_released_by_its_holder_only(tmp_path):
    lock = tmp_path / "a.lock"
    assert try_lock(lock) and lock_text(os.getpid()) == lock.read_text()
    assert not try_lock(lock)  # held by a live process (this one)
    release_lock(lock)
    assert not lock.exists() and try_lock(lock)
    lock.write_text(lock_text(os.getppid()))  # now another live process holds it
    release_lock(lock)
    assert lock.exists() and not try_lock(lock)


def test_a_dead_processs_lock_is_taken_over_unless_it_ran_on_another_host(tmp_path):
    lock = tmp_path / "a.lock"
    lock.write_text(lock_text(dead_pid()))
    assert try_lock(lock) and lock.read_text() == lock_text(os.getpid())
    assert sorted(os.listdir(tmp_path)) == ["a.lock"]  # no marker left
    elsewhere = lock_text(dead_pid(), host="another-machine")
    lock.write_text(elsewhere)
    assert not try_lock(lock) and lock.read_text() == elsewhere


def test_an_unfilled_lock_is_busy_while_fresh_and_stale_once_old(tmp_path):
    lock = tmp_path / "a.lock"
    lock.write_text("")  # its writer is between creating and filling it
    assert not try_lock(lock)
    old = time.time() - 60
    os.utime(lock, (old, old))  # ... or died there long ago
    assert try_lock(lock)

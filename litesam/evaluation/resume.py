"""``ResultLog``: per-image results appended to a JSON-lines file, so that a killed evaluation continues.

Line 1 is a header: the settings of the run (model, checkpoint, data, options). Every further line is
``{"key": ..., "result": ...}`` for one finished image, written with a single ``write`` on a file opened
for appending and fsync'd. A run killed mid-write leaves at most one torn last line; it is dropped (and
cut off the file) when the log is opened again, so the image is simply redone. A log whose header differs
from the new run's settings is refused: results of another model or data set are never mixed in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import InputError, OutputError


class ResultLog:
    """Results by image key, persisted in ``path`` (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, header: dict[str, Any]) -> None:
        self.path = Path(path)
        self.header = json.loads(json.dumps(header))  # as it reads back: tuples become lists
        self.results: dict[str, Any] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and self.path.stat().st_size:
                self._load()
            else:
                self.path.write_text(json.dumps({"header": self.header}) + "\n")
        except OSError as e:
            raise OutputError(f"cannot use result log {self.path}: {e.strerror}") from e

    def _load(self) -> None:
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        complete = data.endswith(b"\n")
        good = 0  # bytes of whole, readable lines
        for i, line in enumerate(lines[:-1] if complete else lines):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if i == len(lines) - (2 if complete else 1):  # only the last line may be torn
                    break
                raise InputError(f"{self.path} line {i + 1} is not JSON: not a litesam result log") from None
            if i == 0:
                if not isinstance(record, dict) or record.get("header") != self.header:
                    raise InputError(
                        f"{self.path} holds results of other settings ({_diff(record, self.header)});"
                        " delete it or write the results elsewhere"
                    )
            else:
                self.results[record["key"]] = record["result"]
            good += len(line) + 1
        if good < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good)

    def __contains__(self, key: str) -> bool:
        return key in self.results

    def __len__(self) -> int:
        return len(self.results)

    def add(self, key: str, result: Any) -> None:
        """Record ``result`` (JSON-serialisable) for ``key``, durably."""
        line = (json.dumps({"key": key, "result": result}) + "\n").encode()
        try:
            with open(self.path, "ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise OutputError(f"cannot append to {self.path}: {e.strerror}") from e
        self.results[key] = result


def _diff(record: Any, header: dict[str, Any]) -> str:
    old = record.get("header") if isinstance(record, dict) else None
    if not isinstance(old, dict):
        return "no header"
    keys = sorted(k for k in set(old) | set(header) if old.get(k) != header.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} there, {header.get(k)!r} now" for k in keys[:3])


def log_path(json_path: str | os.PathLike) -> Path:
    """Where the result log of a run whose report goes to ``json_path`` lives: ``<json_path>.log.jsonl``."""
    path = Path(json_path)
    return path.with_name(path.name + ".log.jsonl")

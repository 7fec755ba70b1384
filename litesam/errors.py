"""The user-facing error types: the CLI prints their one-line message and exits with status 2.

Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class LitesamError(Exception):
    """A problem with what the user gave (a file, an option, a prompt), not a bug in litesam."""


class InputError(LitesamError, ValueError):
    """Invalid input: a prompt, an image, an option or a data file. Also a ``ValueError``, so code that
    catches ``ValueError`` (as segment-anything users do) keeps working."""


class OutputError(LitesamError):
    """An output cannot be written: the path is a file, not writable, on a full disk, ..."""


class MissingDependency(LitesamError, ImportError):
    """An optional package that a feature needs is not installed (the message names the extra)."""

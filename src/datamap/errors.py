"""The exceptions every step raises for the user's input or configuration.

No third-party imports: a process that only needs to report an error (the ``datamap`` command,
a stage that fails early) does not load pyarrow or torch for it.
"""

from __future__ import annotations

import errno


class DatamapError(Exception):
    """A problem with the user's input or configuration.

    The message names the offending file or config key and says how to fix it. Stage entry points
    print it as one line and exit with code 2 (no traceback): it is the user's to fix, not a bug.
    """


class ConfigError(DatamapError):
    """A configuration value is missing, out of range or of the wrong type."""


class DataError(DatamapError):
    """An input file is missing, malformed, or inconsistent with another input."""


class DiskFullError(DataError):
    """A write failed because the file system holding an output is full (or over quota)."""


#: The errors of a write to a full or over-quota file system.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: How C libraries (pyarrow, torch's zip writer) that drop errno phrase the same failure.
_DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded")


def disk_full_cause(exc: BaseException) -> BaseException | None:
    """The exception behind ``exc`` that reports a full or over-quota file system, if any.

    pyarrow and torch re-raise the operating system's error as their own with errno dropped,
    so its text is recognised too."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return exc
        if any(text in str(exc) for text in _DISK_FULL_TEXT):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def describe_bytes(size: float) -> str:
    """A byte count for people: ``512 B``, ``3.4 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def disk_full_error(path: str, written: int | None = None, room: int | None = None,
                    output: str | None = None) -> DiskFullError:
    """The one line for a write of ``path`` that ran out of space: after ``written`` bytes of
    ``output`` (the stage output it belongs to; default ``path``), on a file system that had
    ``room`` bytes free for it, when known."""
    needs = ""
    if written is not None:
        room_text = f" the {describe_bytes(room)} the file system had for it" if room else " that"
        of = f" of {output}" if output and output != path else ""
        needs = f" after writing {describe_bytes(written)}{of}: it needs more than{room_text}"
    error = DiskFullError(
        f"{path}: no space left on the device (or over quota){needs}; free space on that file "
        "system (or move the repository, or its DVC cache with `dvc cache dir`, to a larger "
        "one) and rerun"
    )
    error.path, error.written = path, written
    return error


def datamap_cause(exc: BaseException) -> DatamapError | None:
    """The :class:`DatamapError` behind ``exc``, if any: Hydra's ``instantiate`` wraps an error
    raised in a constructor (a source, a backbone) in its own ``InstantiationException``."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, DatamapError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None

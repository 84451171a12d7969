"""The exceptions every step raises for the user's input or configuration.

No third-party imports: a process that only needs to report an error (the ``datamap`` command,
a stage that fails early) does not load pyarrow or torch for it.
"""

from __future__ import annotations


class DatamapError(Exception):
    """A problem with the user's input or configuration.

    The message names the offending file or config key and says how to fix it. Stage entry points
    print it as one line and exit with code 2 (no traceback): it is the user's to fix, not a bug.
    """


class ConfigError(DatamapError):
    """A configuration value is missing, out of range or of the wrong type."""


class DataError(DatamapError):
    """An input file is missing, malformed, or inconsistent with another input."""


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

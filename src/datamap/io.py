"""Errors, atomic writes and schema-checked reads shared by every stage.

Every artifact is written to a temporary sibling and renamed into place, so a stage that fails
leaves either the previous artifact or nothing — never a half-written file that DVC would cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


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


# --------------------------------------------------------------------------------------------
# atomic writes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success rename it onto ``path``.

    Works for files and directories. On any exception the temporary is removed and ``path`` is
    left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if not target.exists():
            raise RuntimeError(f"atomic write of {path} produced nothing")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Deterministic JSON: sorted keys, fixed indentation, trailing newline."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found; run the stage that produces it first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); regenerate it") from exc


def write_parquet(path: str | os.PathLike, table: pa.Table) -> None:
    """Write a Parquet file byte-identically for identical input (no timestamps, fixed options)."""
    with atomic_path(path) as tmp:
        pq.write_table(
            table,
            tmp,
            compression="zstd",
            use_dictionary=False,
            write_statistics=True,
            store_schema=True,
        )


# --------------------------------------------------------------------------------------------
# schema-checked reads


def read_parquet(
    path: str | os.PathLike,
    required: Iterable[str] = (),
    what: str = "table",
    hint: str = "run the stage that produces it first",
) -> pa.Table:
    """Read a Parquet file and check that the ``required`` columns are present."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found; {hint}")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc}); {hint}") from exc
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise DataError(
            f"{path}: {what} lacks column(s) {', '.join(missing)} "
            f"(has {', '.join(table.column_names)}); {hint}"
        )
    return table


def schema_metadata(table: pa.Table) -> dict[str, Any]:
    """The JSON-decoded ``datamap`` entry of a table's schema metadata ({} when absent)."""
    raw = (table.schema.metadata or {}).get(b"datamap")
    return json.loads(raw) if raw else {}


def with_metadata(table: pa.Table, meta: Mapping[str, Any]) -> pa.Table:
    """Attach ``meta`` as JSON under the ``datamap`` schema-metadata key (sorted, deterministic)."""
    encoded = json.dumps(dict(meta), sort_keys=True).encode()
    return table.replace_schema_metadata({b"datamap": encoded})


def portable_path(path: str | os.PathLike) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute.

    For paths stored inside artifacts (checkpoint states): the stages run from the repository
    root, so a stored ``data/train/checkpoints/last.ckpt`` makes the same bytes in every clone,
    where an absolute path would change the artifact -- and DVC's hash -- with the checkout's
    location.
    """
    absolute = Path(os.path.realpath(path))
    try:
        return absolute.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(absolute)


def local_path(stored: str) -> str:
    """A path stored by :func:`portable_path`, absolute again (relative to the working directory,
    resolved as Lightning resolves its checkpoint directory)."""
    return os.path.realpath(stored)

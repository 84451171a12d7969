"""Atomic writes and schema-checked reads shared by every stage.

Every artifact is written to a temporary sibling and renamed into place, so a stage that fails
leaves either the previous artifact or nothing — never a half-written file that DVC would cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from datamap.errors import (
    DataError,
    DatamapError,
    DiskFullError,
    disk_full_cause,
    disk_full_error,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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
    tmp = _temporary_dir(path.parent, prefix=f".{path.name}.", suffix=".tmp", named=path)
    target = tmp / path.name
    try:
        with _reporting_full_disk(path, tmp):
            yield target
        if not target.exists():
            raise RuntimeError(f"atomic write of {path} produced nothing")
        _fsync_tree(target)  # the bytes on the disk before the name points at them
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
        fsync_path(path.parent)  # and the rename itself, so a crash leaves the old or the new
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fsync_path(path: Path) -> None:
    """Flush ``path`` (a file, or a directory's entries) to the disk; a file system that
    cannot (some network mounts refuse a directory) is left to its own guarantees."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) * path.is_dir())
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    """:func:`fsync_path` of ``path`` and, for a directory, of everything inside it."""
    if path.is_dir() and not path.is_symlink():
        for inner in sorted(path.rglob("*")):
            if not inner.is_symlink():
                fsync_path(inner)
    fsync_path(path)


def _temporary_dir(parent: Path, prefix: str, suffix: str, named: Path) -> Path:
    with _reporting_full_disk(named, None):
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))


def _tree_size(path: Path | None) -> int:
    if path is None or not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@contextlib.contextmanager
def _reporting_full_disk(path: Path, written_into: Path | None) -> Iterator[None]:
    """Turn a full or over-quota file system, under any library's wording, into one
    :class:`~datamap.errors.DiskFullError` naming ``path`` (or the file inside it that failed)
    and how much it had written into ``written_into`` when it failed."""
    try:
        yield
    except DiskFullError as exc:
        # a nested atomic write names its temporary path: name the one the user will look for,
        # and count everything this output had written (the nested temporary is gone by now)
        inner = Path(exc.path)
        if written_into is None or not inner.is_relative_to(written_into):
            raise
        parts = inner.relative_to(written_into).parts[1:]
        written = _tree_size(written_into) + (exc.written or 0)
        raise disk_full_error(str(path.joinpath(*parts)), written, _room(path, written),
                              str(path)) from exc.__cause__
    except DatamapError:
        raise
    except Exception as exc:
        if disk_full_cause(exc) is None:
            raise
        written = _tree_size(written_into)
        raise disk_full_error(str(path), written, _room(path, written)) from exc


def _room(path: Path, written: int) -> int | None:
    """The space an output had: what is free now plus what it wrote (removed on failure)."""
    try:
        return shutil.disk_usage(path.parent).free + written
    except OSError:
        return None


def move_into(staging: str | os.PathLike, out_dir: str | os.PathLike,
              names: Iterable[str]) -> None:
    """Move the entries ``names`` of ``staging`` into ``out_dir``, each replacing what was there
    (a directory is replaced whole); names missing from ``staging`` are skipped."""
    staging, out_dir = Path(staging), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        src, dst = staging / name, out_dir / name
        if not src.exists():
            continue
        _fsync_tree(src)
        if dst.is_dir() and not dst.is_symlink():
            shutil.rmtree(dst)
        os.replace(src, dst)
    fsync_path(out_dir)


@contextlib.contextmanager
def staged_outputs(out_dir: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling of ``out_dir`` for a stage that writes several outputs into it: on
    success every entry written there replaces its namesake in ``out_dir``; on any exception
    none does, so a failed stage leaves the previous outputs (or none), never a mix."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = _temporary_dir(out_dir.parent, prefix=f".{out_dir.name}.staging-", suffix="",
                             named=out_dir)
    try:
        with _reporting_full_disk(out_dir, staging):
            yield staging
        move_into(staging, out_dir, sorted(p.name for p in staging.iterdir()))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def private_dir(path: str | os.PathLike) -> Path:
    """``path`` as a directory only this account can read or write (mode 0700, whatever the
    umask): datamap's own state (``.datamap``: notes, timings, the token store). One this
    account already owns is made private; a link or another account's directory is left as it
    is (the token store then refuses it)."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(path)
    if os.path.isdir(path) and not os.path.islink(path) and info.st_uid == os.getuid() \
            and info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------------------------
# CSV files people open in a spreadsheet (the review queue, corrections, confusion tables)

#: A cell starting with one of these gets one leading ``'`` (:func:`guard_cell`): a formula to a
#: spreadsheet (OWASP's list), or the guard's own quote, so that the rule can be undone.
GUARDED_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")
#: A negative integer as a spreadsheet writes it back (``-1``, ``-42``; no leading zero, at most
#: 15 digits): it reads as that number, never as a formula, and saves as the same characters,
#: so it is written as it is (a class ``-1`` stays ``-1`` on the screen). Other numbers keep the
#: guard: a spreadsheet would save ``+1`` as ``1``, ``-0`` as ``0`` or ``-2e3`` as ``-2000``.
PLAIN_NUMBER = re.compile(r"-[1-9][0-9]{0,14}", re.ASCII)


def guard_cell(value: str) -> str:
    """A free-text CSV cell as datamap writes it: one extra leading ``'`` when ``value`` starts
    with one of :data:`GUARDED_STARTS` and is not a :data:`PLAIN_NUMBER`, else ``value``
    unchanged. :func:`unguard_cell` undoes it: every value round-trips exactly."""
    if value.startswith(GUARDED_STARTS) and not PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def unguard_cell(cell: str) -> str:
    """A cell written by :func:`guard_cell` as its value: without its first character when that
    is ``'`` followed by one of :data:`GUARDED_STARTS`, else unchanged (a hand-written ``'x``,
    quote then letter, is data)."""
    if len(cell) >= 2 and cell[0] == "'" and cell[1] in GUARDED_STARTS:
        return cell[1:]
    return cell


def guarded_frame(frame: Any) -> Any:
    """``frame`` with every text cell (and column name) through :func:`guard_cell`; numbers,
    booleans and missing values unchanged."""
    def guard(value: Any) -> Any:
        return guard_cell(value) if isinstance(value, str) else value

    text = [c for c in frame.columns if frame[c].dtype == object or frame[c].dtype == "string"]
    out = frame.assign(**{str(c): frame[c].map(guard) for c in text}) if text else frame
    return out.rename(columns=guard)


def write_csv(path: str | os.PathLike, frame: Any, **to_csv: Any) -> None:
    """``frame`` as a CSV file for people (spreadsheet-guarded, :func:`guarded_frame`), without
    its index, atomically; ``to_csv``: more of pandas' ``to_csv`` options."""
    with atomic_path(path) as tmp:
        guarded_frame(frame).to_csv(tmp, index=False, **to_csv)


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


def save_png(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> None:
    """Write ``fig`` to ``path`` as a PNG, atomically and without the software stamp (the
    same figure gives the same bytes)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})


#: Options shared by every Parquet file datamap writes: fixed, so identical input gives
#: identical bytes (Parquet files hold no timestamps). Per-column codecs and encodings come
#: from :func:`parquet_options`.
PARQUET_OPTIONS: dict[str, Any] = {
    "write_statistics": True,
    "store_schema": True,
}


def parquet_options(schema: pa.Schema, dictionary: Iterable[str] = ()) -> dict[str, Any]:
    """The writer options for a file of ``schema``: :data:`PARQUET_OPTIONS` plus a codec and an
    encoding per column, chosen by what the column holds.

    - floating-point columns (``float32``/``float64``, nested ones too): ``BYTE_STREAM_SPLIT``
      with LZ4. Splitting each value's bytes into streams makes the exponent bytes compressible
      by a fast codec; plain floats barely compress (zstd saved 11 % of a dynamics table's
      ``p_gold`` and decoding it took 2-3x as long as LZ4 on the split bytes, which is smaller).
    - an integer ``id`` column: ``DELTA_BINARY_PACKED`` (ids are mostly consecutive), zstd.
    - the top-level columns named in ``dictionary`` (small domains: classes, epochs, regions):
      dictionary-encoded, zstd.
    - anything else: plain, zstd.
    """
    columns = _leaf_columns(schema)
    dictionary = [c for c in dictionary if c in columns]
    compression: dict[str, str] = {}
    encoding: dict[str, str] = {}
    for path, physical in columns.items():
        if physical in ("FLOAT", "DOUBLE"):
            compression[path], encoding[path] = "lz4", "BYTE_STREAM_SPLIT"
        else:
            compression[path] = "zstd"
            if path == "id" and physical in ("INT32", "INT64"):
                encoding[path] = "DELTA_BINARY_PACKED"
    for path in dictionary:
        encoding.pop(path, None)  # dictionary encoding replaces the chosen one
    return {**PARQUET_OPTIONS, "compression": compression, "column_encoding": encoding,
            "use_dictionary": dictionary or False}


def _leaf_columns(schema: pa.Schema) -> dict[str, str]:
    """``{leaf column path: Parquet physical type}`` of ``schema``, as Parquet names them
    (``logits.list.element``): read from the footer of an empty file of that schema."""
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, schema) as writer:
        writer.write_table(schema.empty_table())
    parquet_schema = pq.read_metadata(pa.BufferReader(sink.getvalue())).schema
    return {parquet_schema.column(i).path: parquet_schema.column(i).physical_type
            for i in range(len(parquet_schema))}


def write_parquet(path: str | os.PathLike, table: pa.Table) -> None:
    """Write a Parquet file byte-identically for identical input (no timestamps, fixed options)."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **parquet_options(table.schema))


# --------------------------------------------------------------------------------------------
# schema-checked reads


def open_parquet(path: str | os.PathLike, what: str = "table",
                 hint: str = "run the stage that produces it first") -> pq.ParquetFile:
    """Open a Parquet file for reading (its schema, row groups); a missing or unreadable file
    is one :class:`DataError` naming ``what`` it should hold and the ``hint``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found; {hint}")
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc}); {hint}") from exc


def read_parquet(
    path: str | os.PathLike,
    required: Iterable[str] = (),
    what: str = "table",
    hint: str = "run the stage that produces it first",
) -> pa.Table:
    """Read a Parquet file and check that the ``required`` columns are present."""
    path = Path(path)
    table = open_parquet(path, what, hint).read()
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

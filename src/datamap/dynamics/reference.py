"""Import and export the training dynamics of allenai/cartography (the paper's code).

The reference format is a directory of ``dynamics_epoch_{e}.jsonl`` files, e = 0..E-1, one JSON
object per line::

    {"guid": 17, "logits_epoch_3": [0.25, -1.5, 2.0], "gold": 2}

(the reference's logger writes ``.jsonl`` while its reader opens ``.json``; both extensions are
accepted). Given the directory of a reference *model*, its ``training_dynamics/`` subdirectory is
used. Import builds our dynamics table: ``guid`` becomes ``id``, the per-record values are derived
from the logits with :func:`~datamap.dynamics.values.per_example_values`, the logits are kept
(float32), mode ``train_pass``, one record per epoch.

Unlike the reference reader, import refuses -- with a :class:`~datamap.errors.DataError` naming the
file (and line) -- a stray file in the directory, a gap in the epoch numbers, a guid missing from
(or added in) an epoch, a guid twice in one epoch, a gold label that changes between epochs,
logits of different lengths, fewer than two logits, non-finite logits, and malformed lines.

Export writes the format back from a table with a ``logits`` column. Every logit is written as
the shortest decimal that reads back as the same float64 -- the exact value of the float32 --
so import -> export -> import is bit-exact. Lines are assembled with Arrow string kernels and
parsed with Arrow's JSON reader (a per-line Python parser runs only to pinpoint errors), so
neither direction loops over examples in Python.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from datamap.dynamics.schema import DynamicsMeta, build_dynamics, validated_order
from datamap.dynamics.storage import read_dynamics
from datamap.dynamics.values import per_example_values
from datamap.errors import DataError
from datamap.io import atomic_path

_FILE = re.compile(r"^dynamics_epoch_(0|[1-9][0-9]*)\.(jsonl|json)$")
_SUBDIR = "training_dynamics"
_INT64 = (pa.int64(), pa.int32(), pa.int16(), pa.int8(), pa.uint8(), pa.uint16(), pa.uint32())
# Bytes of text per Arrow string batch when exporting (keeps 32-bit offsets safe).
_EXPORT_BATCH_BYTES = 1 << 27


def _logits_key(epoch: int) -> str:
    return f"logits_epoch_{epoch}"


# --------------------------------------------------------------------------------------------
# import


def import_reference_dynamics(directory: str | os.PathLike) -> pa.Table:
    """Read a reference training-dynamics directory into a validated dynamics table."""
    files = _epoch_files(Path(directory))
    parsed = [_parse_file(path, epoch) for epoch, path in enumerate(files)]
    first = parsed[0]
    order0 = np.argsort(first.guid, kind="stable")
    ids = first.guid[order0]
    _check_unique(first, order0, ids)
    gold = first.gold[order0]
    k = first.logits.shape[1]
    logits = np.empty((len(files), len(ids), k), dtype=np.float32)
    logits[0] = first.logits[order0]
    for epoch in range(1, len(files)):
        cur = parsed[epoch]
        if cur.logits.shape[1] != k:
            raise DataError(
                f"{cur.path}: lines have {cur.logits.shape[1]} logits but {first.path.name} "
                f"has {k}; every epoch must score the same classes"
            )
        order = np.argsort(cur.guid, kind="stable")
        guid = cur.guid[order]
        _check_unique(cur, order, guid)
        if len(guid) != len(ids) or not np.array_equal(guid, ids):
            lost = np.setdiff1d(ids, guid)
            if len(lost):
                raise DataError(
                    f"{cur.path}: guid {int(lost[0])} (from {first.path.name}) is missing from "
                    f"this epoch ({len(lost)} missing); every epoch must record every example"
                )
            extra = np.setdiff1d(guid, ids)
            line = cur.line_of(int(np.flatnonzero(cur.guid == extra[0])[0]))
            raise DataError(
                f"{cur.path}:{line}: guid {int(extra[0])} is not in {first.path.name} "
                f"({len(extra)} such); every epoch must record the same examples"
            )
        changed = np.flatnonzero(cur.gold[order] != gold)
        if len(changed):
            i = int(changed[0])
            line = cur.line_of(int(order[i]))
            line0 = first.line_of(int(order0[i]))
            raise DataError(
                f"{cur.path}:{line}: the gold label of guid {int(ids[i])} is "
                f"{int(cur.gold[order][i])}, but {first.path.name}:{line0} has {int(gold[i])}; "
                "dynamics must be recorded against fixed labels"
            )
        logits[epoch] = cur.logits[order]
    n_epochs, n = len(files), len(ids)
    flat = logits.reshape(n_epochs * n, k)
    gold_rows = np.tile(gold, n_epochs)
    columns: dict[str, Any] = {
        "id": np.tile(ids, n_epochs),
        "epoch": np.repeat(np.arange(n_epochs, dtype=np.int32), n),
        "record": np.zeros(n_epochs * n, dtype=np.int32),
        "gold": gold_rows,
        **per_example_values(flat, gold_rows),
    }
    meta = DynamicsMeta(num_classes=k, mode="train_pass", records_per_epoch=1, seed=None,
                        split="train")
    return build_dynamics(columns, meta, logits=flat)


def _epoch_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise DataError(f"{directory}: not a directory; pass the reference training_dynamics "
                        "directory (holding dynamics_epoch_<e>.jsonl files)")
    entries = sorted(os.listdir(directory))
    if not any(_FILE.match(e) for e in entries) and (directory / _SUBDIR).is_dir():
        return _epoch_files(directory / _SUBDIR)
    by_epoch: dict[int, Path] = {}
    for name in entries:
        match = _FILE.match(name)
        path = directory / name
        if match is None or not path.is_file():
            raise DataError(
                f"{path}: stray {'directory' if path.is_dir() else 'file'} in a reference "
                "dynamics directory (expected only dynamics_epoch_<e>.jsonl files); move it "
                "elsewhere"
            )
        epoch = int(match.group(1))
        if epoch in by_epoch:
            raise DataError(f"{path}: epoch {epoch} is also in {by_epoch[epoch].name}; keep one")
        by_epoch[epoch] = path
    if not by_epoch:
        raise DataError(f"{directory}: no dynamics_epoch_<e>.jsonl files")
    last = max(by_epoch)
    gaps = [e for e in range(last + 1) if e not in by_epoch]
    if gaps:
        raise DataError(
            f"{directory}: dynamics_epoch_{gaps[0]}.jsonl is missing (found epochs "
            f"{sorted(by_epoch)[:10]}); epochs must run 0..{last} without gaps"
        )
    return [by_epoch[e] for e in range(last + 1)]


class _Parsed:
    """One epoch file: guid [n] int64, gold [n] int64, logits [n, K] float32, in file order."""

    def __init__(self, path: Path, guid: np.ndarray, gold: np.ndarray, logits: np.ndarray):
        self.path, self.guid, self.gold, self.logits = path, guid, gold, logits
        self._lines: np.ndarray | None = None

    def line_of(self, row: int) -> int:
        """1-based line number of the row-th record (blank lines are skipped by both parsers)."""
        if self._lines is None:
            with open(self.path, "rb") as f:
                blank = [not raw.strip() for raw in f]
            self._lines = np.flatnonzero(~np.asarray(blank, dtype=bool)) + 1
        return int(self._lines[row])


def _check_unique(parsed: _Parsed, order: np.ndarray, sorted_guid: np.ndarray) -> None:
    dup = np.flatnonzero(sorted_guid[1:] == sorted_guid[:-1])
    if len(dup):
        i = int(dup[0])
        first, second = sorted(parsed.line_of(int(order[j])) for j in (i, i + 1))
        raise DataError(
            f"{parsed.path}:{second}: guid {int(sorted_guid[i])} appears twice in this epoch "
            f"(also line {first}); each example must be recorded once per epoch"
        )


def _parse_file(path: Path, epoch: int) -> _Parsed:
    key = _logits_key(epoch)
    parsed = _parse_fast(path, key)
    if parsed is None:
        parsed = _parse_slow(path, key)
    n, k = parsed.logits.shape if parsed.logits.ndim == 2 else (len(parsed.guid), 0)
    if n == 0:
        raise DataError(f"{path}: no records; every epoch file needs one line per example")
    if k < 2:
        raise DataError(
            f"{path}:{parsed.line_of(0)}: {k} logit(s) per line; the format needs one logit per "
            "class (a binary model with one sigmoid logit must be exported as two logits)"
        )
    bad = ~np.isfinite(parsed.logits).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}:{parsed.line_of(row)}: {key} holds a non-finite value (or one "
                        "beyond the float32 range)")
    out = (parsed.gold < 0) | (parsed.gold >= k)
    if out.any():
        row = int(np.flatnonzero(out)[0])
        raise DataError(f"{path}:{parsed.line_of(row)}: gold {int(parsed.gold[row])} is not "
                        f"one of the {k} classes of its logits")
    return parsed


def _parse_fast(path: Path, key: str) -> _Parsed | None:
    """Arrow's multithreaded JSON reader; None when anything is unusual (the slow parser then
    names the offending line)."""
    try:
        table = pj.read_json(path)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError):
        return None
    if table.num_rows == 0:
        return None
    if any(c not in table.column_names for c in ("guid", "gold", key)):
        return None
    guid, gold, logits = (table.column(c) for c in ("guid", "gold", key))
    if guid.type not in _INT64 or gold.type not in _INT64:
        return None
    if not (pa.types.is_list(logits.type) or pa.types.is_large_list(logits.type)):
        return None
    value_type = logits.type.value_type
    if not (pa.types.is_floating(value_type) or value_type in _INT64):
        return None
    if guid.null_count or gold.null_count or logits.null_count:
        return None
    arr = logits.combine_chunks()
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(arr)
    if values.null_count or (lengths != lengths[0]).any():
        return None
    flat = values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):
        as32 = flat.astype(np.float32)
    return _Parsed(path, guid.to_numpy().astype(np.int64), gold.to_numpy().astype(np.int64),
                   as32.reshape(len(lengths), int(lengths[0])))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_slow(path: Path, key: str) -> _Parsed:
    """Line-by-line ``json.loads`` that reports the first problem as ``file:line``."""
    guids: list[int] = []
    golds: list[int] = []
    rows: list[list[float]] = []
    width: tuple[int, int] | None = None  # (number of logits, line)
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    with handle:
        try:
            for lineno, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{where}: malformed JSON ({exc.msg} at column "
                                    f"{exc.colno})") from exc
                if not isinstance(obj, dict):
                    raise DataError(f"{where}: expected a JSON object, got "
                                    f"{type(obj).__name__}")
                for field in ("guid", key, "gold"):
                    if field not in obj:
                        raise DataError(f"{where}: no {field!r} field")
                guid, gold, logits = obj["guid"], obj["gold"], obj[key]
                if not _is_int(guid) or not -(2**63) <= guid < 2**63:
                    raise DataError(f"{where}: guid must be a 64-bit integer, not {guid!r}")
                if not isinstance(logits, list) or not all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) for v in logits):
                    raise DataError(f"{where}: {key} must be a list of numbers")
                if not _is_int(gold) or not 0 <= gold < len(logits):
                    raise DataError(f"{where}: gold must be the index of one of the "
                                    f"{len(logits)} classes of its logits, not {gold!r}")
                if width is None:
                    width = (len(logits), lineno)
                elif len(logits) != width[0]:
                    raise DataError(f"{where}: {len(logits)} logits, but line {width[1]} has "
                                    f"{width[0]}; every line needs one logit per class")
                guids.append(guid)
                golds.append(gold)
                rows.append(logits)
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc})") from exc
    k = width[0] if width else 0
    try:
        flat = np.array(rows, dtype=np.float64).reshape(len(rows), k)
    except OverflowError as exc:  # integers beyond float64
        raise DataError(f"{path}: {key} holds a number beyond the float range") from exc
    with np.errstate(over="ignore", invalid="ignore"):
        logits32 = flat.astype(np.float32)
    return _Parsed(path, np.array(guids, dtype=np.int64), np.array(golds, dtype=np.int64),
                   logits32)


# --------------------------------------------------------------------------------------------
# export


def export_reference_dynamics(dynamics: pa.Table | str | os.PathLike,
                              directory: str | os.PathLike) -> list[Path]:
    """Write a dynamics table (or Parquet path) with logits as a reference directory.

    The directory is built in a temporary sibling and renamed into place; an existing
    directory is replaced only if it holds nothing but ``dynamics_epoch_*`` files. Returns the
    written files in epoch order.
    """
    directory = Path(directory)
    if isinstance(dynamics, pa.Table):
        source = "dynamics"
        order = validated_order(dynamics, source)
        table = dynamics if order is None else dynamics.take(order)
    else:
        source = str(dynamics)
        table = read_dynamics(dynamics)  # read_dynamics validates; canonicalise below
        order = validated_order(table, source)
        if order is not None:
            table = table.take(order)
    if "logits" not in table.column_names:
        raise DataError(
            f"{source}: no logits column, and the reference format stores logits; record the "
            "dynamics with logits kept (or import them from a reference directory)"
        )
    meta = DynamicsMeta.from_table(table, source)
    if meta.records_per_epoch != 1:
        raise DataError(
            f"{source}: {meta.records_per_epoch} records per epoch, but the reference format "
            "holds exactly one per epoch; record with one record per epoch to export"
        )
    if directory.exists():
        if not directory.is_dir():
            raise DataError(f"{directory}: exists and is not a directory; choose another path")
        foreign = [n for n in os.listdir(directory) if not _FILE.match(n)]
        if foreign:
            raise DataError(f"{directory}: exists and holds other files (e.g. {foreign[0]}); "
                            "choose an empty or new directory")
    k = meta.num_classes
    n_rows = table.num_rows
    logits = table.column("logits").combine_chunks()
    if isinstance(logits, pa.ChunkedArray):  # pyarrow < 15 may return a ChunkedArray
        logits = pa.concat_arrays(logits.chunks)
    flat = logits.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if logits.null_count or len(flat) != n_rows * k:
        raise DataError(f"{source}: the logits column must hold {k} values (num_classes) for "
                        "every row")
    flat = flat.reshape(n_rows, k)
    if not np.isfinite(flat).all():
        row = int(np.flatnonzero(~np.isfinite(flat).all(axis=1))[0])
        raise DataError(f"{source}: id {table.column('id')[row].as_py()} has non-finite logits; "
                        "JSON cannot hold them")
    ids = table.column("id").to_numpy()
    epoch = table.column("epoch").to_numpy()
    gold = table.column("gold").to_numpy()
    n_epochs = int(epoch[-1]) + 1
    n = n_rows // n_epochs
    rows_per_batch = max(1, _EXPORT_BATCH_BYTES // (40 + 26 * k))
    written = []
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        for e in range(n_epochs):
            path = tmp / f"dynamics_epoch_{e}.jsonl"
            with open(path, "wb") as out:
                for a in range(e * n, (e + 1) * n, rows_per_batch):
                    b = min(a + rows_per_batch, (e + 1) * n)
                    out.write(_json_lines(ids[a:b], gold[a:b], flat[a:b], e))
            written.append(directory / path.name)
    return written


def _float_strings(values: np.ndarray) -> pa.Array:
    """Shortest round-trip decimal of each float32's exact (float64) value."""
    text = pc.cast(pa.array(values.astype(np.float64)), pa.string())
    # "-0" would read back as the integer 0 and lose the sign.
    return pc.if_else(pc.equal(text, "-0"), "-0.0", text)


def _json_lines(ids: np.ndarray, gold: np.ndarray, logits: np.ndarray, epoch: int) -> bytes:
    """The JSON lines of one batch, joined by Arrow string kernels (no Python loop over rows)."""
    parts: list[Any] = ['{"guid": ', pc.cast(pa.array(ids), pa.string()),
                        f', "{_logits_key(epoch)}": [']
    for j in range(logits.shape[1]):
        if j:
            parts.append(", ")
        parts.append(_float_strings(logits[:, j]))
    parts += ['], "gold": ', pc.cast(pa.array(gold.astype(np.int64)), pa.string()), "}\n"]
    lines = pc.binary_join_element_wise(*parts, "")
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[
        lines.offset: lines.offset + len(lines) + 1]
    return lines.buffers()[2].to_pybytes()[offsets[0]: offsets[-1]]

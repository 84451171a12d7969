"""The training-dynamics table: schema, construction, validation, reading and writing.

Long format, one row per example per record (DESIGN.md section 3)::

    id int64 | epoch int32 | record int32 | gold int32 | p_gold float32 | pred int32 |
    margin float32 | loss float32 | el2n float32 | [logits fixed_size_list<float32|float16>]

Rows are stored sorted by (epoch, record, id) -- the *canonical order* -- so identical recordings
give identical bytes. Schema metadata (JSON under the ``datamap`` key) carries ``num_classes``,
``mode`` (``train_pass``/``eval_pass``), ``records_per_epoch``, ``seed`` and ``split``.

Readers refuse anything but exactly one row per (id, epoch, record) with the same id set in every
record: silently misaligned dynamics are the failure mode of the reference implementation.

On-disk layout (written by :func:`write_dynamics` / :class:`DynamicsWriter`): every
(epoch, record) *slot* is split into Parquet row groups of :data:`ROW_GROUP_IDS` ids, cut at the
same id positions in every slot. Row group ``j`` of every slot therefore holds the same ids, so
:func:`open_dynamics` can read the dynamics of one range of ids at a time -- a few row groups per
slot -- and score tables far larger than memory. Files with any other layout (written by other
tools) are still read, validated and scored, just in one piece.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from datamap.io import (
    DataError,
    atomic_path,
    read_parquet,
    schema_metadata,
    with_metadata,
)

log = logging.getLogger(__name__)

#: Column name -> Arrow type, in on-disk order. ``logits`` is optional and added separately.
SCHEMA: dict[str, pa.DataType] = {
    "id": pa.int64(),
    "epoch": pa.int32(),
    "record": pa.int32(),
    "gold": pa.int32(),
    "p_gold": pa.float32(),
    "pred": pa.int32(),
    "margin": pa.float32(),
    "loss": pa.float32(),
    "el2n": pa.float32(),
}
MODES = ("train_pass", "eval_pass")

#: Ids per Parquet row group within one (epoch, record) slot (see the module docstring).
ROW_GROUP_IDS = 1 << 18
#: Target number of rows (ids x records) held in memory at once when reading in chunks.
CHUNK_ROWS = 1 << 22

# Same options as datamap.io.write_parquet: byte-identical output for identical input.
_PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "use_dictionary": False,
    "write_statistics": True,
    "store_schema": True,
}
_HINT = "run the train stage (or `datamap import-dynamics`) to produce it"


@dataclass(frozen=True)
class DynamicsMeta:
    """What a reader needs to interpret a dynamics table, stored in its schema metadata."""

    num_classes: int
    mode: str = "train_pass"
    records_per_epoch: int = 1
    seed: int | None = None
    split: str = "train"

    @classmethod
    def from_table(cls, table: pa.Table | pa.Schema, source: str = "dynamics") -> DynamicsMeta:
        raw = schema_metadata(table.empty_table() if isinstance(table, pa.Schema) else table)
        if "num_classes" not in raw:
            raise DataError(
                f"{source}: no datamap schema metadata (num_classes, mode, ...); write the table "
                "with datamap.dynamics.write_dynamics or import it with `datamap import-dynamics`"
            )
        known = {k: raw[k] for k in ("num_classes", "mode", "records_per_epoch", "seed", "split")
                 if k in raw}
        return cls(**known)


def per_example_values(logits: np.ndarray, gold: np.ndarray) -> dict[str, np.ndarray]:
    """Derive the stored per-record values from raw logits, in float32, with NumPy.

    ``logits`` is [N, K], ``gold`` is [N]. Used by importers; the recording callback computes the
    same values on the device with torch (see ``datamap.dynamics.recorder``).
    Ties in argmax go to the lowest class index; ``margin`` is gold logit minus the largest other
    logit (from logits, never probabilities, as AUM defines it).
    """
    logits = np.asarray(logits, dtype=np.float32)
    gold = np.asarray(gold, dtype=np.int64)
    n, k = logits.shape
    rows = np.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    denom = exp.sum(axis=1, keepdims=True)
    probs = exp / denom
    p_gold = probs[rows, gold]
    gold_logit = logits[rows, gold]
    others = logits.copy()
    others[rows, gold] = -np.inf
    margin = gold_logit - others.max(axis=1) if k > 1 else np.zeros(n, np.float32)
    loss = np.log(denom[:, 0]) - shifted[rows, gold]
    onehot_diff = probs.copy()
    onehot_diff[rows, gold] -= 1.0
    el2n = np.sqrt((onehot_diff * onehot_diff).sum(axis=1))
    return {
        "p_gold": p_gold.astype(np.float32),
        "pred": logits.argmax(axis=1).astype(np.int32),
        "margin": margin.astype(np.float32),
        "loss": loss.astype(np.float32),
        "el2n": el2n.astype(np.float32),
    }


def dynamics_schema(meta: DynamicsMeta, logits_dtype: str | None = None) -> pa.Schema:
    """The Arrow schema of a dynamics table (with ``logits`` when ``logits_dtype`` is given)."""
    fields = [pa.field(name, dtype) for name, dtype in SCHEMA.items()]
    if logits_dtype is not None:
        value_type = _logits_type(logits_dtype)
        fields.append(pa.field("logits", _logits_list_type(value_type, meta.num_classes)))
    schema = pa.schema(fields)
    return schema.with_metadata({b"datamap": _meta_json(meta)})


def _logits_list_type(value_type: pa.DataType, num_classes: int) -> pa.DataType:
    # "element" is the child name Parquet readers give back, so built and re-read tables agree
    return pa.list_(pa.field("element", value_type), num_classes)


def _logits_type(logits_dtype: str) -> pa.DataType:
    types = {"float32": pa.float32(), "float16": pa.float16()}
    if logits_dtype not in types:
        raise DataError(f"dynamics: logits dtype must be float32 or float16, not {logits_dtype!r}")
    return types[logits_dtype]


def _meta_json(meta: DynamicsMeta) -> bytes:
    # the same encoding as datamap.io.with_metadata
    return json.dumps(asdict(meta), sort_keys=True).encode()


def build_dynamics(
    columns: Mapping[str, Any],
    meta: DynamicsMeta,
    logits: np.ndarray | None = None,
    logits_dtype: str = "float32",
) -> pa.Table:
    """Build a validated, canonically sorted dynamics table from column arrays.

    ``columns`` maps every name in :data:`SCHEMA` to a 1-D array of equal length; ``logits`` is an
    optional [rows, num_classes] array stored as a list column.
    """
    missing = [c for c in SCHEMA if c not in columns]
    if missing:
        raise DataError(f"dynamics: missing column(s) {', '.join(missing)}")
    arrays = {name: np.asarray(columns[name]).astype(dtype.to_pandas_dtype(), copy=False)
              for name, dtype in SCHEMA.items()}
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) != 1:
        raise DataError(f"dynamics: columns have different lengths {sorted(lengths)}")
    order = np.lexsort((arrays["id"], arrays["record"], arrays["epoch"]))
    if np.array_equal(order, np.arange(len(order))):
        order = slice(None)  # already canonical: skip the gathers
    fields = [pa.array(arrays[name][order], type=dtype) for name, dtype in SCHEMA.items()]
    names = list(SCHEMA)
    if logits is not None:
        logits = np.asarray(logits)
        n_rows = len(arrays["id"])
        if logits.ndim != 2 or logits.shape != (n_rows, meta.num_classes):
            raise DataError(
                f"dynamics: logits have shape {logits.shape}, expected "
                f"({n_rows}, {meta.num_classes})"
            )
        value_type = _logits_type(logits_dtype)
        flat = pa.array(logits[order].astype(value_type.to_pandas_dtype()).ravel(),
                        type=value_type)
        fields.append(pa.FixedSizeListArray.from_arrays(
            flat, type=_logits_list_type(value_type, meta.num_classes)))
        names.append("logits")
    table = pa.Table.from_arrays(fields, names=names)
    table = with_metadata(table, asdict(meta))
    validate_dynamics(table, source="dynamics")
    return table


# --------------------------------------------------------------------------------------------
# validation


def validate_dynamics(
    table: pa.Table,
    source: str = "dynamics",
    expected_ids: np.ndarray | None = None,
) -> None:
    """Raise :class:`DataError` unless ``table`` is a well-formed dynamics table.

    Checks: required columns; no nulls; epochs contiguous from 0 and records 0..R-1 in every
    epoch (R equal to the ``records_per_epoch`` metadata); exactly one row per
    (id, epoch, record); the same id set in every record; a constant gold label per id; labels
    and predictions inside [0, num_classes). With ``expected_ids`` also that the recorded ids are
    exactly those (e.g. the prepared train split).

    Runs in linear time when the rows are in canonical order (as written by this module) and
    sorts a copy of the keys otherwise.
    """
    _validate(table, source, expected_ids)


def _canonical_order(slot: np.ndarray, ids: np.ndarray) -> np.ndarray | None:
    """None when rows are sorted by (slot, id) with ids strictly increasing in a slot, else the
    permutation that sorts them."""
    if len(slot) > 1:
        step = np.diff(slot)
        backwards = step < 0
        if not backwards.any():
            same = step == 0
            if not (same & (ids[1:] <= ids[:-1])).any():
                return None
    else:
        return None
    return np.lexsort((ids, slot))


def _validate(
    table: pa.Table,
    source: str,
    expected_ids: np.ndarray | None = None,
) -> np.ndarray | None:
    """:func:`validate_dynamics`; returns None when rows are canonical, else the sorting order."""
    missing = [c for c in SCHEMA if c not in table.column_names]
    if missing:
        raise DataError(f"{source}: missing dynamics column(s) {', '.join(missing)}")
    if table.num_rows == 0:
        raise DataError(f"{source}: the dynamics table is empty; record at least one epoch")
    meta = DynamicsMeta.from_table(table, source)
    _check_meta(meta, source)
    for name in SCHEMA:
        if table.column(name).null_count:
            raise DataError(f"{source}: column {name!r} has missing values")

    ids = table.column("id").to_numpy()
    epoch = table.column("epoch").to_numpy()
    record = table.column("record").to_numpy()
    gold = table.column("gold").to_numpy()

    if int(epoch.min()) < 0:
        raise DataError(f"{source}: epochs must start at 0 (first is {int(epoch.min())})")
    if int(record.min()) < 0:
        raise DataError(f"{source}: negative record index")
    n_records = int(record.max()) + 1
    wide = (int(epoch.max()) + 1) * n_records >= 2**31
    slot = epoch.astype(np.int64 if wide else np.int32) * n_records + record
    order = _canonical_order(slot, ids)
    if order is None:
        slot_sorted, ids_sorted = slot, ids
    else:
        slot_sorted, ids_sorted = slot[order], ids[order]
    del slot

    starts = np.concatenate(([0], np.flatnonzero(slot_sorted[1:] != slot_sorted[:-1]) + 1))
    slots = slot_sorted[starts]
    counts = np.diff(np.append(starts, len(slot_sorted)))
    epochs = np.unique(slots // n_records)
    if epochs[0] != 0 or epochs[-1] != len(epochs) - 1:
        gaps = sorted(set(range(int(epochs[-1]) + 1)) - set(epochs.tolist()))
        raise DataError(
            f"{source}: epochs must run 0..E-1 without gaps; missing epoch(s) {gaps[:10]}"
            if gaps else f"{source}: epochs must start at 0 (first is {int(epochs[0])})"
        )
    if len(slots) != len(epochs) * n_records:
        raise DataError(
            f"{source}: every epoch needs records 0..{n_records - 1}; some (epoch, record) pairs "
            "have no rows"
        )
    if order is not None:
        dup = (slot_sorted[1:] == slot_sorted[:-1]) & (ids_sorted[1:] == ids_sorted[:-1])
        if dup.any():
            i = int(np.flatnonzero(dup)[0])
            e, r = divmod(int(slot_sorted[i]), n_records)
            raise DataError(
                f"{source}: id {int(ids_sorted[i])} appears more than once in epoch {e}, "
                f"record {r}; each example must be recorded exactly once per record"
            )
    del slot_sorted
    n_ids = int(counts[0])
    uneven = np.flatnonzero(counts != n_ids)
    if len(uneven):
        e, r = divmod(int(slots[uneven[0]]), n_records)
        raise DataError(
            f"{source}: epoch {e}, record {r} has {int(counts[uneven[0]])} ids but epoch 0 has "
            f"{n_ids}; an example was missed or added mid-training, so its dynamics would be "
            "misaligned"
        )
    id_grid = ids_sorted.reshape(len(slots), n_ids)
    first_ids = id_grid[0]
    gold_grid = (gold if order is None else gold[order]).reshape(len(slots), n_ids)
    _check_grid(id_grid, gold_grid, slots, n_records, source)
    _check_classes(table, meta, source)
    if meta.records_per_epoch != n_records:
        raise DataError(
            f"{source}: the metadata says {meta.records_per_epoch} record(s) per epoch but the "
            f"table has {n_records}; rewrite it with write_dynamics"
        )
    if expected_ids is not None:
        expected = np.unique(np.asarray(expected_ids, dtype=np.int64))
        if not np.array_equal(expected, first_ids):
            extra = np.setdiff1d(first_ids, expected)
            lost = np.setdiff1d(expected, first_ids)
            raise DataError(
                f"{source}: recorded ids do not match the training split ({len(lost)} missing, "
                f"e.g. {lost[:5].tolist()}; {len(extra)} unknown, e.g. {extra[:5].tolist()}); "
                "the dynamics are stale: rerun the train stage"
            )
    return order


def _check_meta(meta: DynamicsMeta, source: str) -> None:
    if not isinstance(meta.num_classes, int) or meta.num_classes < 1:
        raise DataError(f"{source}: num_classes in the metadata must be a positive integer, "
                        f"not {meta.num_classes!r}")
    if meta.mode not in MODES:
        raise DataError(f"{source}: unknown recording mode {meta.mode!r}; expected one of "
                        f"{', '.join(MODES)}")
    if not isinstance(meta.records_per_epoch, int) or meta.records_per_epoch < 1:
        raise DataError(f"{source}: records_per_epoch in the metadata must be a positive integer, "
                        f"not {meta.records_per_epoch!r}")


def _check_grid(id_grid: np.ndarray, gold_grid: np.ndarray, slots: np.ndarray, n_records: int,
                source: str) -> None:
    """Every slot (row) holds the same ids with the same gold labels. Rows must already be
    strictly increasing in id (canonical order) for this to prove uniqueness."""
    first_ids = id_grid[0]
    differs = (id_grid != first_ids).any(axis=1)
    if differs.any():
        row = int(np.flatnonzero(differs)[0])
        e, r = divmod(int(slots[row]), n_records)
        lost = np.setdiff1d(first_ids, id_grid[row])
        extra = np.setdiff1d(id_grid[row], first_ids)
        detail = (f"id {int(lost[0])} is missing" if len(lost)
                  else f"id {int(extra[0])} is not in epoch 0" if len(extra) else "ids differ")
        raise DataError(
            f"{source}: epoch {e}, record {r} records a different set of ids than epoch 0 "
            f"({detail}); the dynamics would be misaligned"
        )
    changed = (gold_grid != gold_grid[0]).any(axis=0)
    if changed.any():
        col = int(np.flatnonzero(changed)[0])
        raise DataError(
            f"{source}: the gold label of id {int(first_ids[col])} changes between epochs; "
            "dynamics must be recorded against fixed labels"
        )


def _check_classes(table: pa.Table, meta: DynamicsMeta, source: str) -> None:
    for name in ("gold", "pred"):
        values = table.column(name)
        lo, hi = pc.min(values).as_py(), pc.max(values).as_py()
        if lo < 0 or hi >= meta.num_classes:
            raise DataError(
                f"{source}: column {name!r} holds class {lo if lo < 0 else hi}, outside "
                f"[0, {meta.num_classes}) declared by num_classes"
            )


# --------------------------------------------------------------------------------------------
# writing


class DynamicsWriter:
    """Stream a dynamics table to Parquet in canonical order, one batch at a time.

    Batches must arrive in canonical order: each batch holds rows of a single (epoch, record)
    slot with strictly increasing ids, slots in increasing (epoch, record) order, and ids
    continuing across the batches of one slot. Row groups hold ``row_group_ids`` ids and are cut
    at the same id positions in every slot (the layout :func:`open_dynamics` reads in chunks).
    The file appears atomically on :meth:`close` (or leaving the ``with`` block); nothing
    appears if an exception escapes. Cross-slot consistency (same ids, fixed gold) is checked
    by the readers.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        meta: DynamicsMeta,
        *,
        logits_dtype: str | None = None,
        row_group_ids: int = ROW_GROUP_IDS,
    ) -> None:
        if row_group_ids < 1:
            raise ValueError("row_group_ids must be positive")
        self.path = Path(path)
        self.meta = meta
        self.schema = dynamics_schema(meta, logits_dtype)
        self._group = int(row_group_ids)
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        try:
            self._writer = pq.ParquetWriter(tmp, self.schema, **_PARQUET_OPTIONS)
        except BaseException as exc:
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._slot: tuple[int, int] | None = None
        self._last_id: int | None = None
        self._closed = False

    def write(self, columns: Mapping[str, Any], logits: np.ndarray | None = None) -> None:
        """Append rows given as arrays (every :data:`SCHEMA` column, plus optional logits)."""
        arrays = [pa.array(np.asarray(columns[name]).astype(dtype.to_pandas_dtype(), copy=False),
                           type=dtype) for name, dtype in SCHEMA.items()]
        if "logits" in self.schema.names:
            if logits is None:
                raise DataError(f"{self.path}: this writer stores logits; pass them")
            value_type = self.schema.field("logits").type.value_type
            logits = np.asarray(logits, dtype=value_type.to_pandas_dtype())
            flat = pa.array(logits.ravel(), type=value_type)
            arrays.append(pa.FixedSizeListArray.from_arrays(
                flat, type=self.schema.field("logits").type))
        self.write_table(pa.Table.from_arrays(arrays, schema=self.schema))

    def write_table(self, batch: pa.Table) -> None:
        """Append a table of rows (same columns as the writer's schema)."""
        if batch.num_rows == 0:
            return
        missing = [c for c in self.schema.names if c not in batch.column_names]
        if missing:
            raise DataError(f"{self.path}: batch lacks column(s) {', '.join(missing)}")
        batch = batch.select(self.schema.names).cast(self.schema)
        e_mm = pc.min_max(batch.column("epoch"))
        r_mm = pc.min_max(batch.column("record"))
        slot = (e_mm["min"].as_py(), r_mm["min"].as_py())
        if slot != (e_mm["max"].as_py(), r_mm["max"].as_py()):
            raise DataError(f"{self.path}: a batch must hold a single (epoch, record) slot")
        ids = batch.column("id").to_numpy()
        if (np.diff(ids) <= 0).any():
            raise DataError(f"{self.path}: ids must be strictly increasing within a batch")
        if slot != self._slot:
            if self._slot is not None and slot < self._slot:
                raise DataError(f"{self.path}: slot {slot} written after {self._slot}; write "
                                "epochs and records in increasing order")
            self._flush(final=True)
            self._slot, self._last_id = slot, None
        if self._last_id is not None and ids[0] <= self._last_id:
            raise DataError(f"{self.path}: ids must keep increasing within epoch {slot[0]}, "
                            f"record {slot[1]}")
        self._last_id = int(ids[-1])
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self._pending_rows:
            return
        pending = pa.concat_tables(self._pending)
        full = (pending.num_rows // self._group) * self._group
        cut = pending.num_rows if final else full
        if cut:
            self._writer.write_table(pending.slice(0, cut), row_group_size=self._group)
        rest = pending.slice(cut)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._flush(final=True)
            self._writer.close()
        except BaseException as exc:
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        """Discard everything written so far."""
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        exc = RuntimeError("aborted")
        self._ctx.__exit__(type(exc), exc, None)

    def __enter__(self) -> DynamicsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_dynamics(path: str | os.PathLike, table: pa.Table,
                   row_group_ids: int = ROW_GROUP_IDS) -> None:
    """Validate and atomically write a dynamics table (canonical order, chunk-readable layout).

    The bytes depend only on the table's content: identical recordings give identical files.
    """
    order = _validate(table, source=str(path))
    if order is not None:
        table = table.take(order)
    meta = DynamicsMeta.from_table(table)
    logits_dtype = None
    if "logits" in table.column_names:
        value_type = table.schema.field("logits").type.value_type
        logits_dtype = {pa.float32(): "float32", pa.float16(): "float16"}.get(value_type)
        if logits_dtype is None:
            raise DataError(f"{path}: logits must be float32 or float16, not {value_type}")
    schema = dynamics_schema(meta, logits_dtype)
    table = table.select(schema.names).cast(schema)
    n_slots = table.num_rows // _ids_per_slot(table)
    n_ids = table.num_rows // n_slots
    with DynamicsWriter(path, meta, logits_dtype=logits_dtype,
                        row_group_ids=row_group_ids) as writer:
        for s in range(n_slots):
            writer.write_table(table.slice(s * n_ids, n_ids))


def _ids_per_slot(table: pa.Table) -> int:
    """Number of ids in slot 0 of a validated canonical table."""
    epoch = table.column("epoch").to_numpy()
    record = table.column("record").to_numpy()
    first = (epoch == epoch[0]) & (record == record[0])
    return int(np.argmin(first)) if not first.all() else len(first)


# --------------------------------------------------------------------------------------------
# reading


def read_dynamics(
    path: str | os.PathLike,
    expected_ids: np.ndarray | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """Read and validate a dynamics table (optionally against the ids it must cover)."""
    path = Path(path)
    table = read_parquet(path, required=SCHEMA, what="dynamics table", hint=_HINT)
    validate_dynamics(table, source=str(path), expected_ids=expected_ids)
    if columns is not None:
        table = table.select(list(columns))
    return table


@dataclass
class DynamicsChunk:
    """The dynamics of a contiguous range of ids, as dense grids.

    ``ids`` [n] int64 ascending; ``gold`` [n] int32; ``values[name]`` [S, n] with one row per
    kept (epoch, record) slot in canonical order (epoch-major), S = epochs x records_per_epoch.
    """

    ids: np.ndarray
    gold: np.ndarray
    values: dict[str, np.ndarray]
    records_per_epoch: int


class DynamicsSource:
    """A validated dynamics table -- in memory or a Parquet file -- read in chunks of ids.

    Use :func:`open_dynamics` to create one. Attributes: ``meta`` (:class:`DynamicsMeta`),
    ``n_ids``, ``n_epochs``, ``records_per_epoch`` and ``source`` (a name for messages).
    """

    meta: DynamicsMeta
    n_ids: int
    n_epochs: int
    records_per_epoch: int
    source: str

    def chunks(
        self,
        columns: Sequence[str],
        *,
        epochs: int | None = None,
        chunk_rows: int = CHUNK_ROWS,
    ) -> Iterator[DynamicsChunk]:
        """Yield :class:`DynamicsChunk` objects covering every id once, in id order.

        ``columns``: value columns to load as grids (e.g. ``("p_gold", "pred")``); ``epochs``:
        keep only the first ``epochs`` epochs (None: all); ``chunk_rows``: target ids x slots per
        chunk, which bounds the memory a chunk needs.
        """
        raise NotImplementedError


def open_dynamics(source: pa.Table | str | os.PathLike, name: str | None = None) -> DynamicsSource:
    """Open a dynamics table (an Arrow table or a Parquet path) for chunked, validated reading.

    A path written by :func:`write_dynamics` is validated and read chunk by chunk (bounded
    memory); any other file is read whole and validated with :func:`validate_dynamics`.
    """
    if isinstance(source, pa.Table):
        return _TableSource(source, name or "dynamics")
    path = Path(source)
    file_source = _FileSource.try_open(path)
    if file_source is not None:
        return file_source
    log.info("%s: not in the chunked layout of write_dynamics; reading it whole", path)
    table = read_parquet(path, required=SCHEMA, what="dynamics table", hint=_HINT)
    return _TableSource(table, str(path))


def _chunk_bounds(n_ids: int, ids_per_chunk: int) -> list[tuple[int, int]]:
    step = max(1, ids_per_chunk)
    return [(a, min(a + step, n_ids)) for a in range(0, n_ids, step)]


class _TableSource(DynamicsSource):
    def __init__(self, table: pa.Table, source: str) -> None:
        order = _validate(table, source)
        if order is not None:
            table = table.take(order)
        self.table = table
        self.source = source
        self.meta = DynamicsMeta.from_table(table, source)
        self.records_per_epoch = self.meta.records_per_epoch
        self.n_ids = _ids_per_slot(table)
        self.n_epochs = table.num_rows // self.n_ids // self.records_per_epoch

    def chunks(self, columns, *, epochs=None, chunk_rows=CHUNK_ROWS):
        n_slots = (min(epochs, self.n_epochs) if epochs else self.n_epochs)
        n_slots *= self.records_per_epoch
        n = self.n_ids
        id_col = self.table.column("id")
        gold_col = self.table.column("gold")
        cols = {c: self.table.column(c) for c in columns}
        for a, b in _chunk_bounds(n, chunk_rows // n_slots):
            values = {
                c: np.stack([col.slice(s * n + a, b - a).to_numpy() for s in range(n_slots)])
                for c, col in cols.items()
            }
            yield DynamicsChunk(
                ids=id_col.slice(a, b - a).to_numpy(),
                gold=gold_col.slice(a, b - a).to_numpy(),
                values=values,
                records_per_epoch=self.records_per_epoch,
            )


class _FileSource(DynamicsSource):
    """A Parquet file in the layout of :class:`DynamicsWriter` (checked from its metadata)."""

    def __init__(self, path: Path, pf: pq.ParquetFile, meta: DynamicsMeta, n_epochs: int,
                 records: int, group_rows: list[int]) -> None:
        self.path = path
        self.source = str(path)
        self.pf = pf
        self.meta = meta
        self.n_epochs = n_epochs
        self.records_per_epoch = records
        self.group_rows = group_rows  # rows of row group j within every slot
        self.n_ids = int(sum(group_rows))

    @classmethod
    def try_open(cls, path: Path) -> _FileSource | None:
        """The source, None when the file is readable but not in the chunked layout; raises
        DataError when it is not a usable dynamics file at all."""
        if not path.is_file():
            raise DataError(f"{path}: dynamics table not found; {_HINT}")
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{path}: not a readable Parquet file ({exc}); {_HINT}") from exc
        schema = pf.schema_arrow
        missing = [c for c in SCHEMA if c not in schema.names]
        if missing:
            raise DataError(
                f"{path}: dynamics table lacks column(s) {', '.join(missing)} "
                f"(has {', '.join(schema.names)}); {_HINT}"
            )
        meta = DynamicsMeta.from_table(schema, str(path))
        _check_meta(meta, str(path))
        md = pf.metadata
        if md.num_row_groups == 0 or md.num_rows == 0:
            raise DataError(f"{path}: the dynamics table is empty; record at least one epoch")
        index = {md.schema.column(j).name: j for j in range(md.num_columns)}
        groups = []
        for i in range(md.num_row_groups):
            rg = md.row_group(i)
            stats = []
            for name in ("epoch", "record", "id"):
                st = rg.column(index[name]).statistics
                if st is None or not st.has_min_max:
                    return None
                stats.append((st.min, st.max))
            (e0, e1), (r0, r1), (i0, i1) = stats
            if e0 != e1 or r0 != r1:
                return None
            groups.append((e0, r0, rg.num_rows, i0, i1))
        records = max(g[1] for g in groups) + 1
        n_epochs = max(g[0] for g in groups) + 1
        if min(g[0] for g in groups) < 0 or min(g[1] for g in groups) < 0:
            return None
        per_slot: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
        last = (-1, -1)
        for e, r, rows, i0, i1 in groups:
            if (e, r) < last:
                return None
            last = (e, r)
            per_slot.setdefault((e, r), []).append((rows, i0, i1))
        expected = [(e, r) for e in range(n_epochs) for r in range(records)]
        if list(per_slot) != expected:
            return None  # gaps: the whole-table validation names them
        pattern = per_slot[(0, 0)]
        if any(v != pattern for v in per_slot.values()):
            return None
        if meta.records_per_epoch != records:
            raise DataError(
                f"{path}: the metadata says {meta.records_per_epoch} record(s) per epoch but the "
                f"table has {records}; rewrite it with write_dynamics"
            )
        return cls(path, pf, meta, n_epochs, records, [p[0] for p in pattern])

    def chunks(self, columns, *, epochs=None, chunk_rows=CHUNK_ROWS):
        n_epochs = min(epochs, self.n_epochs) if epochs else self.n_epochs
        n_slots = n_epochs * self.records_per_epoch
        n_groups = len(self.group_rows)
        per_chunk = max(1, chunk_rows // n_slots)
        batches: list[list[int]] = [[]]
        rows = 0
        for j, g in enumerate(self.group_rows):
            if batches[-1] and rows + g > per_chunk:
                batches.append([])
                rows = 0
            batches[-1].append(j)
            rows += g
        wanted = list(dict.fromkeys(["id", "epoch", "record", "gold", *columns]))
        expect_slot = np.arange(n_slots)
        prev_last: int | None = None
        for js in batches:
            groups = [s * n_groups + j for s in range(n_slots) for j in js]
            try:
                t = self.pf.read_row_groups(groups, columns=wanted, use_threads=True)
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataError(f"{self.path}: cannot read row groups ({exc})") from exc
            n = t.num_rows // n_slots
            for name in wanted:
                if t.column(name).null_count:
                    raise DataError(f"{self.path}: column {name!r} has missing values")
            grid = {name: t.column(name).to_numpy().reshape(n_slots, n) for name in wanted}
            del t  # the grids are copies: free the Arrow buffers before the next read
            slot = grid["epoch"].astype(np.int64) * self.records_per_epoch + grid["record"]
            if (slot != expect_slot[:, None]).any():
                raise DataError(f"{self.path}: row-group statistics disagree with the epoch and "
                                "record columns; rewrite it with write_dynamics")
            ids = grid["id"][0]
            if (np.diff(ids) <= 0).any() or (prev_last is not None and ids[0] <= prev_last):
                pos = np.flatnonzero(np.diff(ids) <= 0)
                bad = int(ids[pos[0] + 1]) if len(pos) else int(ids[0])
                raise DataError(
                    f"{self.path}: id {bad} appears more than once (or out of order) in epoch 0, "
                    "record 0; each example must be recorded exactly once per record"
                )
            prev_last = int(ids[-1])
            _check_grid(grid["id"], grid["gold"], expect_slot, self.records_per_epoch,
                        str(self.path))
            for name in ("gold", "pred"):
                if name in grid:
                    lo, hi = int(grid[name].min()), int(grid[name].max())
                    if lo < 0 or hi >= self.meta.num_classes:
                        raise DataError(
                            f"{self.path}: column {name!r} holds class {lo if lo < 0 else hi}, "
                            f"outside [0, {self.meta.num_classes}) declared by num_classes"
                        )
            yield DynamicsChunk(
                ids=ids,
                gold=grid["gold"][0],
                values={c: grid[c] for c in columns},
                records_per_epoch=self.records_per_epoch,
            )

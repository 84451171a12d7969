"""Dynamics tables on disk: the streaming Parquet writer, reading, and reading in chunks of ids.

Layout (written by :func:`write_dynamics` / :class:`DynamicsWriter`): every (epoch, record)
*slot* is split into Parquet row groups of :data:`ROW_GROUP_IDS` ids, cut at the same id
positions in every slot. Row group ``j`` of every slot therefore holds the same ids, so
:func:`open_dynamics` can read the dynamics of one range of ids at a time -- a few row groups per
slot -- and score tables far larger than memory. Files with any other layout (written by other
tools) are still read, validated and scored, just in one piece.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from datamap.dynamics.schema import (
    SCHEMA,
    DynamicsMeta,
    check_grid,
    check_id_range,
    check_meta,
    check_types,
    check_values,
    conform_types,
    dynamics_schema,
    ids_per_slot,
    validate_dynamics,
    validated_order,
)
from datamap.errors import DataError
from datamap.io import atomic_path, open_parquet, parquet_options, read_parquet

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Ids per Parquet row group within one (epoch, record) slot (see the module docstring).
ROW_GROUP_IDS = 1 << 18
#: Target number of rows (ids x records) held in memory at once when reading in chunks.
CHUNK_ROWS = 1 << 22

#: Columns with a few distinct values, dictionary-encoded on disk (see
#: :func:`~datamap.io.parquet_options`).
DICTIONARY_COLUMNS = ("epoch", "record", "gold", "pred")

_HINT = "run the train stage (or `datamap import-dynamics`) to produce it"


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
            self._writer = pq.ParquetWriter(tmp, self.schema, **parquet_options(
                self.schema, dictionary=DICTIONARY_COLUMNS))
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
        check_types(batch.schema, str(self.path))  # the cast below must keep every value
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
    order = validated_order(table, source=str(path))
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
    n_slots = table.num_rows // ids_per_slot(table)
    n_ids = table.num_rows // n_slots
    with DynamicsWriter(path, meta, logits_dtype=logits_dtype,
                        row_group_ids=row_group_ids) as writer:
        for s in range(n_slots):
            writer.write_table(table.slice(s * n_ids, n_ids))


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
    table = conform_types(table, str(path))  # validated: the cast keeps every value
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
        aligned: bool = False,
    ) -> Iterator[DynamicsChunk]:
        """Yield :class:`DynamicsChunk` objects covering every id once, in id order.

        ``columns``: value columns to load as grids (e.g. ``("p_gold", "pred")``); ``epochs``:
        keep only the first ``epochs`` epochs (None: all); ``chunk_rows``: target ids x slots per
        chunk, which bounds the memory a chunk needs. ``aligned=True`` trusts the file's layout
        for the ids and gold labels -- read from the first slot only, their alignment across
        slots unchecked; the values are still checked -- for a first pass whose results a
        later, checked pass over the same chunks confirms (the same ``epochs`` and
        ``chunk_rows`` give the same chunks).
        """
        raise NotImplementedError


def prefetched(items: Iterator[T]) -> Iterator[T]:
    """``items``, each produced on a worker thread while the caller works on the one before (a
    chunk is read and decoded -- which releases the GIL -- while the last one is reduced).
    Errors surface where the item would have; leaving early closes ``items``."""
    done = object()
    with ThreadPoolExecutor(1, thread_name_prefix="datamap-read") as worker:
        upcoming = worker.submit(next, items, done)
        try:
            while True:
                item = upcoming.result()
                if item is done:
                    return
                upcoming = worker.submit(next, items, done)
                yield item
        finally:
            with contextlib.suppress(BaseException):
                upcoming.result()  # a generator cannot be closed while it runs
            close = getattr(items, "close", None)
            if close is not None:
                close()


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
        table = conform_types(table, source)  # chunks hand on the schema's types
        order = validated_order(table, source)
        if order is not None:
            table = table.take(order)
        self.table = table
        self.source = source
        self.meta = DynamicsMeta.from_table(table, source)
        self.records_per_epoch = self.meta.records_per_epoch
        self.n_ids = ids_per_slot(table)
        self.n_epochs = table.num_rows // self.n_ids // self.records_per_epoch

    def chunks(self, columns, *, epochs=None, chunk_rows=CHUNK_ROWS, aligned=False):
        # validated whole when opened: `aligned` has nothing to skip
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
        pf = open_parquet(path, "dynamics table", _HINT)
        schema = pf.schema_arrow
        missing = [c for c in SCHEMA if c not in schema.names]
        if missing:
            raise DataError(
                f"{path}: dynamics table lacks column(s) {', '.join(missing)} "
                f"(has {', '.join(schema.names)}); {_HINT}"
            )
        check_types(schema, str(path))
        meta = DynamicsMeta.from_table(schema, str(path))
        check_meta(meta, str(path))
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
        if schema.field("id").type.equals(pa.uint64()):
            check_id_range(max(g[4] for g in groups), str(path))
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

    def _grids(self, groups: list[int], columns: Sequence[str],
               n_slots: int) -> dict[str, np.ndarray]:
        """The ``columns`` of row groups ``groups`` (``n_slots`` slots' worth) as [slot, id]
        grids (copies: the Arrow buffers are freed before the next read)."""
        if not columns:
            return {}
        try:
            t = self.pf.read_row_groups(groups, columns=list(columns), use_threads=True)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{self.path}: cannot read row groups ({exc})") from exc
        # the types were checked when the file was opened and the ids' range against the
        # row-group statistics; conform_types checks that range again on the values read
        t = conform_types(t, str(self.path))
        n = t.num_rows // n_slots
        for name in columns:
            if t.column(name).null_count:
                raise DataError(f"{self.path}: column {name!r} has missing values")
        return {name: t.column(name).to_numpy().reshape(n_slots, n) for name in columns}

    def _check_layout(self, grid: dict[str, np.ndarray], expect_slot: np.ndarray,
                      prev_last: int | None) -> None:
        """Every slot of the chunk is the one the statistics said, with the same increasing
        ids (continuing the last chunk's) and the same gold labels."""
        ids = grid["id"][0]
        slot = grid["epoch"].astype(np.int64) * self.records_per_epoch + grid["record"]
        if (slot != expect_slot[:, None]).any():
            raise DataError(f"{self.path}: row-group statistics disagree with the epoch and "
                            "record columns; rewrite it with write_dynamics")
        if (np.diff(ids) <= 0).any() or (prev_last is not None and ids[0] <= prev_last):
            pos = np.flatnonzero(np.diff(ids) <= 0)
            bad = int(ids[pos[0] + 1]) if len(pos) else int(ids[0])
            raise DataError(
                f"{self.path}: id {bad} appears more than once (or out of order) in epoch 0, "
                "record 0; each example must be recorded exactly once per record"
            )
        check_grid(grid["id"], grid["gold"], expect_slot, self.records_per_epoch,
                   str(self.path))

    def chunks(self, columns, *, epochs=None, chunk_rows=CHUNK_ROWS, aligned=False):
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
        keys = ["id", "gold"] if aligned else ["id", "epoch", "record", "gold"]
        wanted = list(dict.fromkeys([*keys, *columns]))
        expect_slot = np.arange(n_slots)
        prev_last: int | None = None
        for js in batches:
            groups = [s * n_groups + j for s in range(n_slots) for j in js]
            if aligned:
                grid = {**self._grids(js, keys, 1), **self._grids(groups, columns, n_slots)}
            else:
                grid = self._grids(groups, wanted, n_slots)
            ids = grid["id"][0]
            if not aligned:
                self._check_layout(grid, expect_slot, prev_last)
            prev_last = int(ids[-1])
            for name in columns:
                check_values(name, grid[name], ids, str(self.path))
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

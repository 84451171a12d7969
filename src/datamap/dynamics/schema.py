"""The training-dynamics table: its schema, metadata, construction and validation.

Long format, one row per example per record::

    id int64 | epoch int32 | record int32 | gold int32 | p_gold float32 | pred int32 |
    margin float32 | loss float32 | el2n float32 | [logits fixed_size_list<float32|float16>]

Rows are kept sorted by (epoch, record, id) -- the *canonical order* -- so identical recordings
give identical bytes. Schema metadata (JSON under the ``datamap`` key) carries ``num_classes``,
``mode`` (``train_pass``/``eval_pass``), ``records_per_epoch``, ``seed`` and ``split``.

Validation refuses anything but exactly one row per (id, epoch, record) with the same id set in
every record: silently misaligned dynamics are the failure mode of the reference implementation.
It also refuses a column of another type than :data:`SCHEMA`'s (a float ``pred``, a string id),
except an integer type that widens to it without loss, and uint64 ids that fit int64; readers
hand such columns on in the schema's type (:func:`conform_types`).
Writing and (chunked) reading live in :mod:`datamap.dynamics.storage`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from datamap.errors import DataError
from datamap.io import schema_metadata, with_metadata

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
_INT64_MAX = int(np.iinfo(np.int64).max)


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


def _widens_to(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Whether every value of ``actual`` is a value of ``expected``: the type itself, or an
    integer type that widens to it without loss (int8/int16 or uint8 to int32, ...)."""
    if actual.equals(expected):
        return True
    if not (pa.types.is_integer(actual) and pa.types.is_integer(expected)):
        return False
    if pa.types.is_signed_integer(actual):
        return actual.bit_width <= expected.bit_width
    return actual.bit_width < expected.bit_width


def check_types(schema: pa.Schema, source: str) -> None:
    """Raise :class:`DataError` unless every :data:`SCHEMA` column of ``schema`` (those it has)
    holds its type or an integer type that widens to it without loss; ``id`` may also be
    uint64, whose values :func:`conform_types` checks.

    Anything else did not come from the recorder and would be read another way without a
    word: a float ``pred`` never equals ``gold`` (every example "never learned"), a float id
    is truncated, a bool ``p_gold`` reads as 0/1."""
    for name, expected in SCHEMA.items():
        if name not in schema.names:
            continue
        actual = schema.field(name).type
        if _widens_to(actual, expected) or (name == "id" and actual.equals(pa.uint64())):
            continue
        narrower = " (or a narrower integer type)" if pa.types.is_integer(expected) else ""
        raise DataError(
            f"{source}: column {name!r} is {_type_name(actual)}, expected "
            f"{_type_name(expected)}{narrower}; dynamics must hold what the recorder writes: "
            f"store the column as {_type_name(expected)} (datamap.dynamics.build_dynamics "
            "does) or rerun the train stage"
        )


def _type_name(dtype: pa.DataType) -> str:
    """An Arrow type as messages name it: floats by their width (Arrow says float, double)."""
    if pa.types.is_floating(dtype):
        return f"float{dtype.bit_width}"
    return str(dtype)


def conform_types(table: pa.Table, source: str) -> pa.Table:
    """``table`` with every :data:`SCHEMA` column it has in its schema type (checked by
    :func:`check_types`, then cast: every value kept), its other columns and metadata as they
    are. A uint64 id above the int64 range is refused."""
    check_types(table.schema, source)
    for name, expected in SCHEMA.items():
        if name not in table.column_names:
            continue
        column = table.column(name)
        if column.type.equals(expected):
            continue
        if name == "id" and column.type.equals(pa.uint64()):
            check_id_range(pc.max(column).as_py(), source)
        table = table.set_column(table.schema.get_field_index(name), name,
                                 column.cast(expected))
    return table


def check_id_range(largest: int | None, source: str) -> None:
    """Refuse a uint64 id column whose ``largest`` id does not fit int64 (the id type of every
    datamap table): wrapped to a negative id, it would name another example."""
    if largest is not None and largest > _INT64_MAX:
        raise DataError(
            f"{source}: column 'id' is uint64 and holds id {largest}, beyond the int64 range "
            f"(at most {_INT64_MAX}); renumber the examples with ids that fit int64"
        )


def validate_dynamics(
    table: pa.Table,
    source: str = "dynamics",
    expected_ids: np.ndarray | None = None,
) -> None:
    """Raise :class:`DataError` unless ``table`` is a well-formed dynamics table.

    Checks: required columns, each of its :data:`SCHEMA` type (or a lossless integer widening
    of it: :func:`check_types`); no nulls; epochs contiguous from 0 and records 0..R-1 in every
    epoch (R equal to the ``records_per_epoch`` metadata); exactly one row per
    (id, epoch, record); the same id set in every record; a constant gold label per id; labels
    and predictions inside [0, num_classes). With ``expected_ids`` also that the recorded ids are
    exactly those (e.g. the prepared train split).

    Runs in linear time when the rows are in canonical order (as written by this module) and
    sorts a copy of the keys otherwise.
    """
    validated_order(table, source, expected_ids)


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


def validated_order(
    table: pa.Table,
    source: str,
    expected_ids: np.ndarray | None = None,
) -> np.ndarray | None:
    """:func:`validate_dynamics`; returns None when rows are canonical, else the sorting order."""
    missing = [c for c in SCHEMA if c not in table.column_names]
    if missing:
        raise DataError(f"{source}: missing dynamics column(s) {', '.join(missing)}")
    table = conform_types(table, source)  # checked in the types every reader gets
    if table.num_rows == 0:
        raise DataError(f"{source}: the dynamics table is empty; record at least one epoch")
    meta = DynamicsMeta.from_table(table, source)
    check_meta(meta, source)
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
    check_grid(id_grid, gold_grid, slots, n_records, source)
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


def check_meta(meta: DynamicsMeta, source: str) -> None:
    if not isinstance(meta.num_classes, int) or meta.num_classes < 1:
        raise DataError(f"{source}: num_classes in the metadata must be a positive integer, "
                        f"not {meta.num_classes!r}")
    if meta.mode not in MODES:
        raise DataError(f"{source}: unknown recording mode {meta.mode!r}; expected one of "
                        f"{', '.join(MODES)}")
    if not isinstance(meta.records_per_epoch, int) or meta.records_per_epoch < 1:
        raise DataError(f"{source}: records_per_epoch in the metadata must be a positive integer, "
                        f"not {meta.records_per_epoch!r}")


def check_grid(id_grid: np.ndarray, gold_grid: np.ndarray, slots: np.ndarray, n_records: int,
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
    for name in VALUE_RANGES:
        check_values(name, table.column(name).to_numpy(), table.column("id").to_numpy(), source)


_LARGEST = float(np.finfo(np.float32).max)
#: The range every recorded value lies in (a probability, a logit difference, a cross-entropy,
#: the L2 distance of two probability vectors, with room for float32 rounding): anything else
#: -- NaN, infinity, a probability of 1.3 -- did not come from the recorder, and every score
#: made from it would be silently wrong.
VALUE_RANGES: dict[str, tuple[float, float]] = {
    "p_gold": (0.0, 1.0),
    "margin": (-_LARGEST, _LARGEST),
    "loss": (0.0, _LARGEST),
    "el2n": (0.0, 1.4143),
}


def check_values(name: str, values: np.ndarray, ids: np.ndarray, source: str) -> None:
    """Raise :class:`DataError` when a value column holds NaN, infinity or a value outside its
    range (:data:`VALUE_RANGES`); ``ids`` (broadcastable to ``values``) name the first one."""
    if name not in VALUE_RANGES:
        return
    lo, hi = VALUE_RANGES[name]
    with np.errstate(invalid="ignore"):
        bad = ~((values >= lo) & (values <= hi))  # NaN compares false: caught here too
    if bad.any():
        first = np.unravel_index(int(np.argmax(bad)), bad.shape)
        example = np.broadcast_to(ids, values.shape)[first]
        raise DataError(
            f"{source}: column {name!r} holds {int(bad.sum())} value(s) outside [{lo:g}, "
            f"{hi:g}] or not a number (first: {float(values[first])!r} for id {int(example)}); "
            "dynamics must hold what the recorder writes: rerun the train stage"
        )



def ids_per_slot(table: pa.Table) -> int:
    """Number of ids in slot 0 of a validated canonical table."""
    epoch = table.column("epoch").to_numpy()
    record = table.column("record").to_numpy()
    first = (epoch == epoch[0]) & (record == record[0])
    return int(np.argmin(first)) if not first.all() else len(first)

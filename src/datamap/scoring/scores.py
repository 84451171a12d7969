"""Cartography scores from training dynamics -- vectorised, chunked, no loop over examples.

What each score is -- its reduction, dtype, ranking and label-error orientation -- lives in the
registry (:mod:`datamap.scoring.registry`); this module runs the registered reductions over a
dynamics table and uses the results:

* :func:`compute_scores` takes a dynamics table (an Arrow table or the path of a Parquet file
  written by :func:`datamap.dynamics.write_dynamics`) and returns one row per example: ``id``,
  ``gold``, every registered score (in registration order, each with its registered dtype) and
  ``region``. Paths are read a range of ids at a time, so memory is bounded by the output plus
  one chunk. :func:`scores_from_arrays` / :func:`scores_from_logits` do the same for in-memory
  arrays (notebooks).
* regions (:mod:`datamap.scoring.regions`) and noise detection (:mod:`datamap.scoring.noise`)
  use the scores.
* :func:`scores_table` / :func:`read_scores`: the ``scores.parquet`` file, typed by name.

The built-in scores (R records per example after burn-out; every mean is over those R records):

======================== ====================================================================
``confidence``           mean p_gold
``variability``          population std of p_gold (ddof 0); ``include_ci=True`` gives the paper
                         code's sqrt(v + v^2 / (R - 1)) with v the population variance (0 at
                         R = 1, where the reference returns NaN)
``correctness``          fraction of records with pred == gold (the reference stores the count;
                         the paper plots this fraction)
``forgetfulness``        number of records t >= 1 with record t-1 correct and record t wrong
                         (Toneva et al. 2019). The reference returns the sentinel 1000 for
                         examples never predicted correctly; we keep the count (0 for them) and
                         set ``never_learned``; rankings put never-learned examples first.
``never_learned``        no kept record is correct
``threshold_closeness``  confidence * (1 - confidence) (Active Bias, Chang et al. 2017)
``aum``                  mean margin, margin = gold logit - largest other logit (Pleiss et al.)
``el2n``                 single-run EL2N: mean of ||softmax - onehot||_2 over the first
                         ``el2n_epochs`` kept epochs of this one run (Paul et al. 2021 average
                         one early epoch over several independent runs instead; see
                         :func:`datamap.scoring.registry.el2n`)
``aleatoric``            mean p_gold * (1 - p_gold) (Data-IQ, Seedat et al. 2022)
``mean_loss``            mean cross-entropy loss
``region``               see :func:`assign_regions`
======================== ====================================================================

``confidence``, ``variability`` (both forms), ``correctness`` (as count / R),
``forgetfulness`` and ``threshold_closeness`` agree with ``compute_train_dy_metrics`` of
allenai/cartography to 1e-6 (tests/test_scores.py checks it against a loop oracle).

Burn-out (``burn_out=K``) keeps the records of the first K epochs; K at or above the number of
recorded epochs keeps everything (as the reference does). ``el2n_epochs`` above the kept epochs
uses every kept epoch; ``None`` means every kept epoch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from datamap.dynamics.storage import CHUNK_ROWS, DynamicsSource, open_dynamics, prefetched
from datamap.dynamics.values import per_example_values
from datamap.errors import ConfigError, DataError
from datamap.io import atomic_path, parquet_options, read_parquet
from datamap.scoring.regions import REGIONS, region_codes, region_spec
from datamap.scoring.registry import (
    EL2N_EPOCHS,
    OPTIONAL_INPUTS,
    Score,
    ScoreInputs,
    all_scores,
    as_records,
)


def flag(value: Any, key: str) -> bool:
    """A true/false option: a boolean (numpy's too), nothing else -- ``bool("false")`` is True.
    (The scoring layer sits below the data layer, whose ``options.flag`` the stages use.)"""
    if isinstance(value, np.bool_):
        value = bool(value)
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    return value

def score_columns() -> tuple[str, ...]:
    """Columns of the scores table, in order: id, gold, the registered scores, region."""
    return ("id", "gold", *(s.name for s in all_scores()), "region")


def _reduce_block(scores: tuple[Score, ...], inputs: ScoreInputs) -> dict[str, np.ndarray]:
    """Every score for one block of examples; a score whose input was not recorded is NaN."""
    n = len(inputs.gold)
    out = {}
    for score in scores:
        if any(getattr(inputs, need) is None for need in score.needs):
            if score.dtype != "float64":
                raise ValueError(f"score {score.name!r} needs {', '.join(score.needs)}")
            out[score.name] = np.full(n, np.nan)
        else:
            out[score.name] = score.reduce(inputs)
    return out


# --------------------------------------------------------------------------------------------
# options


def _positive_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer or null, not {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------
# whole tables


@dataclass
class ScoringPass:
    """Scores of a dynamics table block by block: the options checked, the registry read once.

    ``blocks()`` reads the table a range of ids at a time and yields ``(ids, gold, values)``
    with one array per registered score (or per score in ``only``); the same options and
    ``chunk_rows`` always give the same blocks. ``attrs``: the options and the records used
    (the scores table's metadata). Built by :meth:`open`.
    """

    source: DynamicsSource
    kept: int
    early: int
    include_ci: bool
    rule: str
    params: dict[str, float]
    scores: tuple[Score, ...]
    chunk_rows: int
    attrs: dict[str, Any]

    @classmethod
    def open(cls, dynamics: pa.Table | str | os.PathLike, *, burn_out: int | None = None,
             include_ci: bool = False, el2n_epochs: int | None = EL2N_EPOCHS,
             regions: Mapping[str, Any] | None = None,
             chunk_rows: int = CHUNK_ROWS) -> ScoringPass:
        """Check the options and open ``dynamics`` (see :func:`compute_scores`)."""
        burn_out = _positive_int(burn_out, "burn_out")
        el2n_epochs = _positive_int(el2n_epochs, "el2n_epochs")
        # a boolean only: bool("false") is True, the correction switched on unasked
        include_ci = flag(include_ci, "include_ci")
        rule, params = region_spec(regions)
        source = open_dynamics(dynamics)
        kept = source.n_epochs if burn_out is None else min(burn_out, source.n_epochs)
        early = kept if el2n_epochs is None else min(el2n_epochs, kept)
        rpe = source.records_per_epoch
        attrs = {
            "split": source.meta.split,
            "mode": source.meta.mode,
            "epochs": kept,
            "records_per_epoch": rpe,
            "records": kept * rpe,
            "burn_out": burn_out,
            "include_ci": include_ci,
            "el2n_epochs": early,
            "regions": {"rule": rule, **params},
        }
        return cls(source, kept, early, include_ci, rule, params,
                   all_scores(),  # one snapshot of the registry for the whole table
                   int(chunk_rows), attrs)

    @property
    def n(self) -> int:
        return self.source.n_ids

    def blocks(self, only: tuple[str, ...] | None = None
               ) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
        """``(ids, gold, {score: values})`` per block of ids, in id order. ``only``: just these
        scores -- ones that read ``p_gold`` and their declared inputs, not ``pred`` -- from a
        first pass that trusts the layout for the ids (a later full pass checks them: see
        ``aligned`` in :meth:`~datamap.dynamics.storage.DynamicsSource.chunks`)."""
        scores = self.scores if only is None else tuple(s for s in self.scores
                                                         if s.name in only)
        needed = [c for c in OPTIONAL_INPUTS if any(c in s.needs for s in scores)]
        rpe = self.source.records_per_epoch
        columns = ["p_gold", *needed] if only is not None else ["p_gold", "pred", *needed]
        chunks = self.source.chunks(columns, epochs=self.kept, chunk_rows=self.chunk_rows,
                                    aligned=only is not None)
        for chunk in prefetched(chunks):
            v = chunk.values
            inputs = ScoreInputs(
                v["p_gold"].T, v["pred"].T if "pred" in v else None, chunk.gold,
                include_ci=self.include_ci,
                # [slots, n] grids, epoch-major: the first `early` epochs are the first rows
                **{c: v[c][: self.early * rpe].T if c == "el2n" else v[c].T for c in needed},
            )
            yield chunk.ids, chunk.gold, _reduce_block(scores, inputs)
            del chunk, v, inputs  # release this chunk before the next one is read


def compute_scores(
    dynamics: pa.Table | str | os.PathLike,
    *,
    burn_out: int | None = None,
    include_ci: bool = False,
    el2n_epochs: int | None = EL2N_EPOCHS,
    regions: Mapping[str, Any] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> pd.DataFrame:
    """Cartography scores, one row per example, sorted by id.

    ``dynamics``: a dynamics table (any split) or the path of its Parquet file; paths written by
    :func:`datamap.dynamics.write_dynamics` are read ``chunk_rows`` rows at a time (epochs
    beyond ``burn_out`` are not even read). ``burn_out``: keep only the first K epochs (None:
    all). ``include_ci``: the paper code's corrected variability. ``el2n_epochs``: early epochs
    averaged by ``el2n`` (None: every kept epoch). ``regions``: ``{"rule": ..., **params}`` for
    :func:`assign_regions` (None: :data:`DEFAULT_REGIONS`).

    Returns a DataFrame with columns :func:`score_columns` (each registered score with its
    registered dtype); ``attrs`` record the options and the number of records used. Raises
    :class:`~datamap.errors.DataError` for a malformed table and
    :class:`~datamap.errors.ConfigError` for bad options. To write the scores of a table larger
    than memory, use :func:`datamap.scoring.streaming.write_scores_of` instead.
    """
    scoring = ScoringPass.open(dynamics, burn_out=burn_out, include_ci=include_ci,
                               el2n_epochs=el2n_epochs, regions=regions, chunk_rows=chunk_rows)
    n = scoring.n
    ids = np.empty(n, dtype=np.int64)
    gold = np.empty(n, dtype=np.int64)
    out = {s.name: np.empty(n, dtype=s.dtype) for s in scoring.scores}
    pos = 0
    for block_ids, block_gold, block in scoring.blocks():
        m = len(block_ids)
        ids[pos:pos + m] = block_ids
        gold[pos:pos + m] = block_gold
        for name, values in block.items():
            out[name][pos:pos + m] = values
        pos += m
    if pos != n:  # defensive: the sources guarantee it
        raise DataError(f"{scoring.source.source}: read {pos} ids, expected {n}")
    return _assemble(ids, gold, out, scoring.rule, scoring.params, scoring.attrs)


def _assemble(ids: np.ndarray, gold: np.ndarray, out: dict[str, np.ndarray], rule: str,
              params: Mapping[str, float], attrs: dict[str, Any]) -> pd.DataFrame:
    codes = region_codes(out["confidence"], out["variability"], ids, rule, params)
    columns: dict[str, Any] = {"id": ids, "gold": gold}
    columns.update(out)
    columns["region"] = pd.Categorical.from_codes(codes, categories=list(REGIONS))
    df = pd.DataFrame(columns, copy=False)
    df.attrs.update(attrs)
    return df


def scores_from_arrays(
    p_gold: Any,
    pred: Any,
    gold: Any,
    *,
    margin: Any = None,
    loss: Any = None,
    el2n_values: Any = None,
    ids: Any = None,
    records_per_epoch: int = 1,
    burn_out: int | None = None,
    include_ci: bool = False,
    el2n_epochs: int | None = EL2N_EPOCHS,
    regions: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """:func:`compute_scores` for in-memory arrays (notebooks).

    ``p_gold``, ``pred`` and the optional ``margin``, ``loss``, ``el2n_values``: [N, R] with R =
    epochs x ``records_per_epoch`` in time order; ``gold`` [N]; ``ids`` [N] unique (default
    0..N-1). Scores whose input is missing are NaN. Same output as :func:`compute_scores`.
    """
    p = as_records(p_gold, "p_gold")
    n, r = p.shape
    pred = as_records(pred, "pred")
    gold = np.asarray(gold)
    rpe = _positive_int(records_per_epoch, "records_per_epoch")
    burn_out = _positive_int(burn_out, "burn_out")
    el2n_epochs = _positive_int(el2n_epochs, "el2n_epochs")
    include_ci = flag(include_ci, "include_ci")  # not bool(): bool("false") is True
    rule, params = region_spec(regions)
    if r % rpe:
        raise ValueError(f"{r} records is not a whole number of epochs of {rpe} records")
    optional = {"margin": margin, "loss": loss, "el2n_values": el2n_values}
    arrays = {k: (None if v is None else as_records(v, k)) for k, v in optional.items()}
    for name, arr in {"pred": pred, **arrays}.items():
        if arr is not None and arr.shape != (n, r):
            raise ValueError(f"{name} must have shape ({n}, {r}), got {arr.shape}")
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    if ids.shape != (n,) or len(np.unique(ids)) != n:
        raise ValueError(f"ids must be {n} unique integers")
    n_epochs = r // rpe
    kept = n_epochs if burn_out is None else min(burn_out, n_epochs)
    early = kept if el2n_epochs is None else min(el2n_epochs, kept)
    keep = slice(0, kept * rpe)
    order = np.argsort(ids, kind="stable")
    p, pred, gold, ids = p[order, keep], pred[order, keep], gold[order], ids[order]
    for k, arr in arrays.items():
        if arr is not None:
            arrays[k] = arr[order, : (early if k == "el2n_values" else kept) * rpe]
    inputs = ScoreInputs(p, pred, gold, margin=arrays["margin"], loss=arrays["loss"],
                         el2n=arrays["el2n_values"], include_ci=include_ci)
    out = _reduce_block(all_scores(), inputs)
    attrs = {"epochs": kept, "records_per_epoch": rpe, "records": kept * rpe,
             "burn_out": burn_out, "include_ci": include_ci, "el2n_epochs": early,
             "regions": {"rule": rule, **params}}
    return _assemble(ids, gold.astype(np.int64), out, rule, params, attrs)


def scores_from_logits(logits: Any, gold: Any, **kwargs: Any) -> pd.DataFrame:
    """:func:`scores_from_arrays` from raw logits [N, R, K] and labels [N] (values derived as
    the recorder does: float32 softmax, argmax ties to the lowest class)."""
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim != 3:
        raise ValueError(f"logits must be [N, R, K], got shape {logits.shape}")
    n, r, k = logits.shape
    gold = np.asarray(gold, dtype=np.int64)
    v = per_example_values(logits.reshape(n * r, k), np.repeat(gold, r))
    grid = {name: values.reshape(n, r) for name, values in v.items()}
    return scores_from_arrays(grid["p_gold"], grid["pred"], gold, margin=grid["margin"],
                              loss=grid["loss"], el2n_values=grid["el2n"], **kwargs)


# --------------------------------------------------------------------------------------------
# the scores table on disk

_ARROW_TYPES = {"float64": pa.float64(), "int64": pa.int64(), "bool": pa.bool_()}


def scores_schema() -> pa.Schema:
    """Arrow schema of ``scores.parquet``: id, gold, every registered score typed by its
    registered dtype, region (strings)."""
    return pa.schema([("id", pa.int64()), ("gold", pa.int64())]
                     + [(s.name, _ARROW_TYPES[s.dtype]) for s in all_scores()]
                     + [("region", pa.string())])


def _with_options(schema: pa.Schema, attrs: Mapping[str, Any]) -> pa.Schema:
    """``schema`` with the scoring options in its metadata (sorted JSON: deterministic)."""
    meta = json.dumps(dict(attrs), sort_keys=True, default=str).encode()
    return schema.with_metadata({b"datamap": meta})


def scores_table(scores: pd.DataFrame) -> pa.Table:
    """The scores DataFrame as an Arrow table with :func:`scores_schema` (region as plain
    strings) and the options of ``scores.attrs`` in its schema metadata (deterministic)."""
    schema = _with_options(scores_schema(), scores.attrs)
    missing = [c for c in schema.names if c not in scores.columns]
    if missing:
        raise DataError(f"scores: missing column(s) {', '.join(missing)}")
    arrays = []
    for field in schema:
        values = scores[field.name]
        if field.name == "region":
            arrays.append(pa.array(np.asarray(values, dtype=object), type=pa.string()))
        else:
            arrays.append(pa.array(values.to_numpy(), type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


#: Rows per row group of ``scores.parquet``, whether written whole or block by block (so that
#: both give the same bytes).
SCORES_ROW_GROUP = 1 << 20


class ScoresWriter:
    """Write a ``scores.parquet`` table by table, in row groups of ``row_group_rows`` however
    the rows arrive, each row group compressed on a worker thread while the caller goes on.

    ``path``: the file to write (a temporary one: the caller renames it into place, see
    :func:`write_scores`); ``attrs``: the scoring options stored in the schema metadata.
    """

    def __init__(self, path: str | os.PathLike, attrs: Mapping[str, Any],
                 row_group_rows: int = SCORES_ROW_GROUP) -> None:
        self.schema = _with_options(scores_schema(), attrs)
        self._rows_per_group = int(row_group_rows)
        self._writer = pq.ParquetWriter(path, self.schema, **parquet_options(
            self.schema, dictionary=("gold", "forgetfulness", "never_learned", "region")))
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="datamap-write")
        self._writing: Future | None = None

    def write_block(self, ids: np.ndarray, gold: np.ndarray, values: Mapping[str, np.ndarray],
                    codes: np.ndarray) -> None:
        """Append one block: ``values`` holds every registered score, ``codes`` the int8
        region codes (indices into :data:`REGIONS`)."""
        arrays = [pa.array(ids, type=pa.int64()), pa.array(gold, type=pa.int64())]
        arrays += [pa.array(values[f.name], type=f.type) for f in self.schema
                   if f.name not in ("id", "gold", "region")]
        arrays.append(pa.array(REGIONS, type=pa.string()).take(pa.array(codes)))
        self.write(pa.Table.from_arrays(arrays, schema=self.schema))

    def write(self, table: pa.Table) -> None:
        """Append the rows of ``table`` (with this writer's schema)."""
        self._pending.append(table)
        self._pending_rows += table.num_rows
        while self._pending_rows >= self._rows_per_group:
            self._flush(self._rows_per_group)

    def _flush(self, rows: int) -> None:
        # one contiguous table per row group: pages are cut the same way however rows arrived
        whole = pa.concat_tables(self._pending).combine_chunks()
        group, rest = whole.slice(0, rows), whole.slice(rows)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows
        self._wait()
        self._writing = self._worker.submit(self._writer.write_table, group,
                                            row_group_size=rows)

    def _wait(self) -> None:
        if self._writing is not None:
            writing, self._writing = self._writing, None
            writing.result()

    def close(self, complete: bool = True) -> None:
        """Write what is left (unless ``complete`` is false: the caller discards the file) and
        close the file."""
        try:
            if complete and self._pending_rows:
                self._flush(self._pending_rows)
            if complete:
                self._wait()
        finally:
            self._worker.shutdown()
            self._writer.close()

    def __enter__(self) -> ScoresWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(complete=exc_type is None)


def write_scores(path: str | os.PathLike, scores: pd.DataFrame,
                 row_group_rows: int = SCORES_ROW_GROUP) -> None:
    """Write a scores DataFrame (:func:`compute_scores`) to ``path`` atomically, with the same
    bytes :func:`datamap.scoring.streaming.write_scores_of` writes for the same table."""
    table = scores_table(scores)
    with atomic_path(path) as tmp, ScoresWriter(tmp, scores.attrs, row_group_rows) as writer:
        writer.write(table)


def read_scores(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``scores.parquet`` back into the DataFrame form, checking that it has every
    registered score with its registered type."""
    hint = "run the cartography stage (or `datamap scores`) to produce it"
    schema = scores_schema()
    table = read_parquet(path, required=schema.names, what="scores table", hint=hint)
    wrong = [f"{f.name} is {table.schema.field(f.name).type}, expected {f.type}"
             for f in schema if not table.schema.field(f.name).type.equals(f.type)]
    if wrong:
        raise DataError(f"{path}: scores table has column(s) of the wrong type "
                        f"({'; '.join(wrong)}); {hint} again")
    df = table.select(schema.names).to_pandas()
    df["region"] = pd.Categorical(df["region"].astype(object), categories=list(REGIONS))
    raw = (table.schema.metadata or {}).get(b"datamap")
    if raw:
        df.attrs.update(json.loads(raw))
    return df

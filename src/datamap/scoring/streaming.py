"""Scores of a dynamics table of any size, written as they are computed.

:func:`~datamap.scoring.scores.compute_scores` returns one row per example (about 100 bytes):
at 100 million examples, 10 GiB. :func:`write_scores_of` writes ``scores.parquet`` block by
block instead, in memory that does not grow with the number of examples:

1. a first pass reads only ``p_gold`` (and the ids of the first record), computes confidence
   and variability and, for the quantile region rule, appends their sort keys to a temporary
   file beside the output (24 bytes per example);
2. :func:`~datamap.scoring.regions.quantile_cuts` finds where the rule cuts from a few passes
   over that file (radix selection, :mod:`datamap.scoring.radix`);
3. a second, fully checked pass computes every score, checks that its confidence and
   variability are the first pass's (so the file did not change in between), labels each
   block's regions from the cuts and writes the block.

The threshold rule labels each example on its own scores: one pass. Either way the file has
the bytes :func:`~datamap.scoring.scores.write_scores` gives the DataFrame of
:func:`~datamap.scoring.scores.compute_scores` with the same options.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from datamap.errors import DataError
from datamap.io import atomic_path
from datamap.scoring.regions import (
    REGIONS,
    RegionKeys,
    quantile_codes,
    quantile_cuts,
    threshold_codes,
)
from datamap.scoring.scores import SCORES_ROW_GROUP, ScoresWriter, ScoringPass

#: Examples per read of the key file.
KEY_BLOCK = 1 << 20
_KEY_FIELDS = ("variability", "confidence", "ids")


class _KeyFile:
    """The quantile rule's keys of every example, in id order: appended block by block, then
    read in passes of :data:`KEY_BLOCK` examples, or in step with a later pass over the
    blocks."""

    def __init__(self, directory: Path) -> None:
        self.paths = {f: directory / f"keys-{f}.u64" for f in _KEY_FIELDS}
        self._files: dict[str, BinaryIO] = {f: open(p, "wb") for f, p in self.paths.items()}
        self.n = 0

    def append(self, keys: RegionKeys) -> None:
        for field, file in self._files.items():
            getattr(keys, field).tofile(file)
        self.n += len(keys.ids)

    def close(self) -> None:
        for file in self._files.values():
            file.close()

    def passes(self) -> Iterator[RegionKeys]:
        """One pass over every key, :data:`KEY_BLOCK` examples at a time."""
        with self.reader() as reader:
            for _ in range(0, self.n, KEY_BLOCK):
                yield reader.read(KEY_BLOCK)

    def reader(self) -> _KeyReader:
        """A reader from the first key on (close it after use)."""
        return _KeyReader({f: open(p, "rb") for f, p in self.paths.items()})


class _KeyReader:
    def __init__(self, files: dict[str, BinaryIO]) -> None:
        self.files = files

    def read(self, count: int) -> RegionKeys:
        return RegionKeys(**{f: np.fromfile(file, dtype=np.uint64, count=count)
                             for f, file in self.files.items()})

    def __enter__(self) -> _KeyReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        for file in self.files.values():
            file.close()


def write_scores_of(
    dynamics: pa.Table | str | os.PathLike,
    output: str | os.PathLike,
    *,
    row_group_rows: int = SCORES_ROW_GROUP,
    **options: Any,
) -> dict[str, Any]:
    """Compute the scores of ``dynamics`` and write them to ``output`` (atomically: on any
    error nothing appears), never holding more than a few blocks of examples.

    ``options``: those of :func:`~datamap.scoring.scores.compute_scores` (``burn_out``,
    ``include_ci``, ``el2n_epochs``, ``regions``, ``chunk_rows``). Returns ``{"examples",
    "records", "regions": {name: count}, "options"}``. Raises
    :class:`~datamap.errors.DataError` for a malformed table, or one that changed while it was
    read, and :class:`~datamap.errors.ConfigError` for bad options.
    """
    scoring = ScoringPass.open(dynamics, **options)
    source = scoring.source.source
    counts = np.zeros(len(REGIONS), dtype=np.int64)
    with atomic_path(output) as tmp:
        keys, cuts = None, None
        if scoring.rule == "quantile":
            keys = _KeyFile(tmp.parent)
            try:
                for ids, _, values in scoring.blocks(only=("confidence", "variability")):
                    keys.append(RegionKeys.of(values["confidence"], values["variability"], ids))
            finally:
                keys.close()
            cuts = quantile_cuts(keys.passes, keys.n, scoring.params)
        with ScoresWriter(tmp, scoring.attrs, row_group_rows) as writer, \
                (keys.reader() if keys is not None else contextlib.nullcontext()) as first_pass:
            for ids, gold, values in scoring.blocks():
                if keys is None:
                    codes = threshold_codes(values["confidence"], values["variability"],
                                            scoring.params)
                else:
                    block_keys = RegionKeys.of(values["confidence"], values["variability"], ids)
                    if not block_keys.equals(first_pass.read(len(ids))):
                        raise DataError(
                            f"{source}: the dynamics changed while they were being scored (ids "
                            f"{int(ids[0])}-{int(ids[-1])} read differently in the second "
                            "pass); score them again once nothing is writing the file"
                        )
                    codes = quantile_codes(block_keys, cuts)
                counts += np.bincount(codes, minlength=len(REGIONS))
                writer.write_block(ids, gold, values, codes)
        if int(counts.sum()) != scoring.n:  # defensive: the sources guarantee it
            raise DataError(f"{source}: scored {int(counts.sum())} ids, expected {scoring.n}")
    return {
        "examples": scoring.n,
        "records": scoring.attrs["records"],
        "regions": {r: int(c) for r, c in zip(REGIONS, counts, strict=True)},
        "options": scoring.attrs,
    }

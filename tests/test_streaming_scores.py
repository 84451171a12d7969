"""Scores at any size: exact radix selection of the quantile regions, and `write_scores_of`,
which writes scores.parquet block by block with the bytes of the whole-table writer."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datamap import scoring as S
from datamap.dynamics.storage import write_dynamics
from datamap.errors import DataError
from datamap.scoring import regions as regions_module
from datamap.scoring import streaming
from datamap.scoring.radix import first_k, float_keys, int_keys
from datamap.scoring.regions import region_codes
from datamap.scoring.scores import write_scores
from datamap.scoring.streaming import write_scores_of

from .helpers import make_table


def sorted_codes(conf, var, ids, ambiguous, hard):
    """The quantile rule by sorting everything (the definition the selection must meet)."""
    n = len(conf)
    codes = np.zeros(n, dtype=np.int8)
    by_var = np.lexsort((ids, -var))
    k_amb = min(n, round(ambiguous * n))
    codes[by_var[:k_amb]] = 1
    rest = by_var[k_amb:]
    by_conf = rest[np.lexsort((ids[rest], conf[rest]))]
    codes[by_conf[:min(len(rest), round(hard * n))]] = 2
    return codes


def random_values(rng, n, kind):
    if kind == "uniform":
        return rng.random(n)
    if kind == "ties":  # a handful of distinct values: ids decide most places
        return rng.integers(0, 4, n) * 0.25
    if kind == "signed":  # signed zeros, infinities, subnormals compare as floats do
        return rng.choice([-0.0, 0.0, 5e-324, -1.5, 2.0, np.inf, -np.inf], n)
    return np.round(rng.normal(size=n), 2)


@pytest.mark.parametrize("kind", ["uniform", "ties", "signed", "rounded"])
@pytest.mark.parametrize("collect_items", [1, 7, 1 << 20])
def test_first_k_takes_exactly_what_sorting_takes(kind, collect_items):
    rng = np.random.default_rng([len(kind), collect_items])
    for _ in range(40):
        n = int(rng.integers(1, 2000))
        values = random_values(rng, n, kind)
        ids = rng.permutation(3 * n)[:n] - n  # unique, some negative
        descending = bool(rng.integers(2))
        primary, secondary = float_keys(values, descending=descending), int_keys(ids)
        k = int(rng.integers(0, n + 1))
        # uneven chunks, one of them empty: a pass is any sequence of blocks
        bounds = [0, *sorted(rng.integers(0, n, 3).tolist()), n]

        def passes(p=primary, s=secondary, b=bounds):
            return [(p[x:y], s[x:y]) for x, y in zip(b, b[1:], strict=False)]

        cut = first_k(passes, k, collect_items=collect_items)
        order = np.lexsort((ids, -values if descending else values))
        expected = np.zeros(n, dtype=bool)
        expected[order[:k]] = True
        taken = np.zeros(n, dtype=bool) if cut is None else cut.takes(primary, secondary)
        np.testing.assert_array_equal(taken, expected)


def test_first_k_refuses_more_than_there_is_and_nan():
    keys = (float_keys(np.array([0.5, 0.2])), int_keys(np.array([1, 2])))
    with pytest.raises(ValueError, match="first 3 items of 2"):
        first_k(lambda: [keys], 3)
    with pytest.raises(ValueError, match="NaN"):
        float_keys(np.array([0.1, np.nan]))


@pytest.mark.parametrize("fractions", [(0.33, 0.33), (0.0, 0.5), (0.5, 0.0), (1.0, 0.0),
                                       (0.25, 0.75), (0.1, 0.1)])
def test_region_codes_are_the_sorted_definition(fractions):
    rng = np.random.default_rng(7)
    n = 5000
    conf = np.round(rng.random(n), 2)  # ties in both keys
    var = np.round(rng.random(n) * 0.3, 3)
    ids = rng.permutation(n) * 3
    params = {"ambiguous": fractions[0], "hard": fractions[1]}
    np.testing.assert_array_equal(region_codes(conf, var, ids, "quantile", params),
                                  sorted_codes(conf, var, ids, *fractions))


OPTIONS = [
    {},
    {"regions": {"rule": "threshold", "confidence": 0.4, "variability": 0.1}},
    {"burn_out": 3, "include_ci": True, "regions": {"rule": "quantile", "ambiguous": 0.2,
                                                     "hard": 0.4}},
    {"el2n_epochs": None, "regions": {"rule": "quantile", "ambiguous": 0.0, "hard": 1.0}},
]


@pytest.mark.parametrize("options", OPTIONS)
def test_streamed_file_has_the_bytes_of_the_whole_table(tmp_path, options, monkeypatch):
    table = make_table(n=1000, epochs=4, records=2, seed=11)
    write_dynamics(tmp_path / "d.parquet", table, row_group_ids=64)
    # small blocks, key reads and row groups: every seam of the streamed path is crossed
    monkeypatch.setattr(streaming, "KEY_BLOCK", 100)
    written = write_scores_of(tmp_path / "d.parquet", tmp_path / "streamed.parquet",
                              row_group_rows=300, chunk_rows=64 * 8, **options)
    whole = S.compute_scores(table, **options)
    write_scores(tmp_path / "whole.parquet", whole, row_group_rows=300)
    assert (tmp_path / "streamed.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    assert pq.ParquetFile(tmp_path / "streamed.parquet").metadata.num_row_groups == 4
    back = S.read_scores(tmp_path / "streamed.parquet")
    pd.testing.assert_frame_equal(back, whole, check_like=False)
    counts = whole["region"].value_counts()
    assert written["regions"] == {r: int(counts[r]) for r in S.REGIONS}
    assert written["examples"] == 1000 and written["records"] == whole.attrs["records"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.parquet", "streamed.parquet",
                                                           "whole.parquet"]


def test_default_writer_matches_the_cartography_stage_bytes(tmp_path):
    table = make_table(n=500, epochs=3, seed=2)
    write_dynamics(tmp_path / "d.parquet", table)
    write_scores_of(tmp_path / "d.parquet", tmp_path / "a.parquet")
    write_scores(tmp_path / "b.parquet", S.compute_scores(tmp_path / "d.parquet"))
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_a_file_replaced_while_scored_is_scored_as_it_was_opened(tmp_path, monkeypatch):
    """Stages replace files atomically: the open file stays the one both passes read."""
    path = tmp_path / "d.parquet"
    first = make_table(n=400, epochs=3, seed=1)
    write_dynamics(path, first, row_group_ids=64)
    cuts = regions_module.quantile_cuts

    def replace_after_the_first_pass(*args, **kwargs):
        result = cuts(*args, **kwargs)
        write_dynamics(path, make_table(n=400, epochs=3, seed=2), row_group_ids=64)
        return result

    monkeypatch.setattr(streaming, "quantile_cuts", replace_after_the_first_pass)
    write_scores_of(path, tmp_path / "scores.parquet", chunk_rows=64 * 3)
    pd.testing.assert_frame_equal(S.read_scores(tmp_path / "scores.parquet"),
                                  S.compute_scores(first))


def test_values_that_differ_in_the_second_pass_are_refused(tmp_path, monkeypatch):
    """A file rewritten in place between the passes reads differently the second time: the
    regions drawn from the first pass would not describe the scores written."""
    path = tmp_path / "d.parquet"
    write_dynamics(path, make_table(n=400, epochs=3, seed=1), row_group_ids=64)
    chunks = type(S.ScoringPass.open(path).source).chunks

    def second_pass_reads_other_values(self, columns, **kwargs):
        for chunk in chunks(self, columns, **kwargs):
            if not kwargs.get("aligned") and chunk.ids[0] >= 128:
                chunk.values["p_gold"] = chunk.values["p_gold"] * 0.5
            yield chunk

    monkeypatch.setattr(type(S.ScoringPass.open(path).source), "chunks",
                        second_pass_reads_other_values)
    with pytest.raises(DataError, match="changed while they were being scored"):
        write_scores_of(path, tmp_path / "scores.parquet", chunk_rows=64 * 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.parquet"]


def test_an_error_in_a_late_block_leaves_nothing(tmp_path):
    write_dynamics(tmp_path / "good.parquet", make_table(n=640, epochs=2, seed=4),
                   row_group_ids=64)
    table = pq.read_table(tmp_path / "good.parquet")
    pred = table.column("pred").to_numpy().copy()
    pred[-1] = 7  # a class the metadata does not declare, in the last block read
    bad = table.set_column(table.schema.get_field_index("pred"), "pred",
                           pa.array(pred, type=pa.int32()))
    # the same layout (64 ids per row group and slot), written by another tool
    pq.write_table(bad, tmp_path / "d.parquet", row_group_size=64)
    (tmp_path / "good.parquet").unlink()
    with pytest.raises(DataError, match="holds class 7"):
        write_scores_of(tmp_path / "d.parquet", tmp_path / "scores.parquet",
                        row_group_rows=64, chunk_rows=64 * 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.parquet"]


def _traced_peak(tmp_path, n, monkeypatch):
    path = tmp_path / f"d{n}.parquet"
    write_dynamics(path, make_table(n=n, epochs=4, seed=n), row_group_ids=1024)
    monkeypatch.setattr(streaming, "KEY_BLOCK", 2048)
    tracemalloc.start()
    try:
        write_scores_of(path, tmp_path / f"s{n}.parquet", row_group_rows=2048,
                        chunk_rows=1024 * 4)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_number_of_examples(tmp_path, monkeypatch):
    """NumPy's allocations (traced) peak at the same size for 8x the examples: nothing holds a
    value per example. (Arrow's own buffers are bounded the same way: one chunk in, one row
    group out; benchmarks/bench_scores.py measures the whole process.)"""
    small = _traced_peak(tmp_path, 16_384, monkeypatch)
    large = _traced_peak(tmp_path, 131_072, monkeypatch)
    assert large < 1.25 * small, (small, large)
    # what holding one float64 column of the large run would add, for scale
    assert large - small < 131_072 * 8 / 4

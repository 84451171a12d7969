"""The Parquet files datamap writes: per-column codecs and encodings, exact round trips, and
identical bytes for identical input."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datamap.dynamics.storage import DICTIONARY_COLUMNS, write_dynamics
from datamap.io import parquet_options, write_parquet
from datamap.scoring import compute_scores
from datamap.scoring.scores import write_scores

from .helpers import make_table


def _chunks(path) -> dict[str, tuple[str, tuple[str, ...]]]:
    """``{column path: (codec, encodings)}`` of a file's first row group."""
    group = pq.ParquetFile(path).metadata.row_group(0)
    return {group.column(j).path_in_schema:
            (group.column(j).compression, group.column(j).encodings)
            for j in range(group.num_columns)}


def _awkward_floats(dtype, n: int) -> np.ndarray:
    """Values whose bits a lossy or reinterpreting writer would change: NaN payloads, signed
    zeros, infinities, subnormals, extremes."""
    info = np.finfo(dtype)
    uint = np.uint32 if dtype == np.float32 else np.uint64
    nan_payload = np.array([0x7FC00001 if dtype == np.float32 else 0x7FF8000000000001],
                           dtype=uint).view(dtype)
    special = np.concatenate([nan_payload, np.array(
        [np.nan, -0.0, 0.0, np.inf, -np.inf, info.smallest_subnormal, -info.smallest_subnormal,
         info.max, info.min, info.eps], dtype=dtype)])
    rng = np.random.default_rng(0)
    return np.concatenate([special, rng.random(n - len(special)).astype(dtype)])


def _mixed_table(n: int = 5_000) -> pa.Table:
    rng = np.random.default_rng(1)
    ids = np.sort(rng.choice(np.arange(-2**40, 2**40, 7919), n, replace=False))
    ids[0], ids[-1] = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    return pa.table({
        "id": pa.array(ids),
        "gold": pa.array(rng.integers(0, 3, n), type=pa.int32()),
        "p32": pa.array(_awkward_floats(np.float32, n)),
        "p64": pa.array(_awkward_floats(np.float64, n)),
        "text": pa.array([f"<b>row</b> {i}" for i in range(n)]),
        "logits": pa.array(list(_awkward_floats(np.float32, 2 * n).reshape(n, 2)),
                           type=pa.list_(pa.float32(), 2)),
    })


def test_each_column_gets_the_codec_and_encoding_its_contents_call_for(tmp_path):
    table = _mixed_table()
    pq.write_table(table, tmp_path / "t.parquet",
                   **parquet_options(table.schema, dictionary=("gold", "not_a_column")))
    chunks = _chunks(tmp_path / "t.parquet")
    assert chunks["id"] == ("ZSTD", ("RLE", "DELTA_BINARY_PACKED"))
    for floats in ("p32", "p64", "logits.list.element"):
        assert chunks[floats] == ("LZ4", ("RLE", "BYTE_STREAM_SPLIT")), floats
    assert chunks["text"] == ("ZSTD", ("RLE", "PLAIN"))
    codec, encodings = chunks["gold"]
    assert codec == "ZSTD" and "RLE_DICTIONARY" in encodings


def test_every_value_round_trips_bit_for_bit_and_the_bytes_repeat(tmp_path):
    table = _mixed_table()
    write_parquet(tmp_path / "a.parquet", table)
    write_parquet(tmp_path / "b.parquet", table)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    back = pq.read_table(tmp_path / "a.parquet")
    assert back.schema.remove_metadata() == table.schema
    for name in ("id", "gold", "text"):
        assert back.column(name).equals(table.column(name)), name
    for name, uint in (("p32", np.uint32), ("p64", np.uint64)):
        np.testing.assert_array_equal(back.column(name).to_numpy().view(uint),
                                      table.column(name).to_numpy().view(uint), err_msg=name)
    flat = [t.column("logits").combine_chunks().flatten().to_numpy().view(np.uint32)
            for t in (back, table)]
    np.testing.assert_array_equal(*flat)


def test_dynamics_and_scores_files_use_the_fast_encodings(tmp_path):
    write_dynamics(tmp_path / "d.parquet", make_table(n=500, logits=True))
    chunks = _chunks(tmp_path / "d.parquet")
    assert chunks["p_gold"][1] == ("RLE", "BYTE_STREAM_SPLIT")
    assert chunks["logits.list.element"][1] == ("RLE", "BYTE_STREAM_SPLIT")
    assert chunks["id"][1] == ("RLE", "DELTA_BINARY_PACKED")
    for name in DICTIONARY_COLUMNS:
        assert "RLE_DICTIONARY" in chunks[name][1], name
    scores = compute_scores(tmp_path / "d.parquet")
    write_scores(tmp_path / "s.parquet", scores)
    chunks = _chunks(tmp_path / "s.parquet")
    assert chunks["confidence"] == ("LZ4", ("RLE", "BYTE_STREAM_SPLIT"))
    assert "RLE_DICTIONARY" in chunks["region"][1]


def test_files_in_the_earlier_plain_zstd_encoding_score_the_same(tmp_path):
    write_dynamics(tmp_path / "new.parquet", make_table(n=700, epochs=4, logits=True))
    new = pq.ParquetFile(tmp_path / "new.parquet")
    # the same row groups, every column plain and zstd (what datamap wrote before)
    with pq.ParquetWriter(tmp_path / "old.parquet", new.schema_arrow, compression="zstd",
                          use_dictionary=False, write_statistics=True) as old:
        for i in range(new.metadata.num_row_groups):
            old.write_table(new.read_row_group(i))
    assert _chunks(tmp_path / "old.parquet")["p_gold"] == ("ZSTD", ("RLE", "PLAIN"))
    pd_new = compute_scores(tmp_path / "new.parquet")
    pd_old = compute_scores(tmp_path / "old.parquet")
    assert pd_old.equals(pd_new) and pd_old.attrs == pd_new.attrs

"""The dynamics table: construction, validation (in memory and chunked), writing and reading."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datamap.dynamics.schema import DynamicsMeta, build_dynamics, validate_dynamics
from datamap.dynamics.storage import DynamicsWriter, open_dynamics, read_dynamics, write_dynamics
from datamap.errors import DataError
from datamap.io import with_metadata

from .helpers import make_columns, make_table, raw_table

# --------------------------------------------------------------------------------------------
# validation


def test_build_sorts_and_validates_shuffled_rows():
    cols, lg, ids = make_columns(n=5, epochs=3)
    perm = np.random.default_rng(1).permutation(len(cols["id"]))
    shuffled = {c: np.asarray(v)[perm] for c, v in cols.items()}
    a = build_dynamics(cols, DynamicsMeta(num_classes=3), logits=lg)
    b = build_dynamics(shuffled, DynamicsMeta(num_classes=3), logits=lg[perm])
    assert a.equals(b)
    assert a.column("epoch").to_pylist() == sorted(a.column("epoch").to_pylist())
    assert a.column("id").to_pylist()[:5] == sorted(ids.tolist())


def _expect(cols, match, meta=None):
    meta = meta or DynamicsMeta(num_classes=3)
    with pytest.raises(DataError, match=match):
        build_dynamics(cols, meta)
    # the same table given unsorted to validate_dynamics names the same problem
    perm = np.random.default_rng(2).permutation(len(cols["id"]))
    with pytest.raises(DataError, match=match):
        validate_dynamics(raw_table({c: np.asarray(v)[perm] for c, v in cols.items()}, meta),
                          source="dyn.parquet")


def test_duplicate_id_in_an_epoch_is_refused():
    cols, _, ids = make_columns(n=4, epochs=2)
    cols["id"] = cols["id"].copy()
    cols["id"][5] = cols["id"][4]  # epoch 1 records id ids[0] twice and misses ids[1]
    _expect(cols, rf"id {ids[0]} appears more than once in epoch 1, record 0")


def test_missing_id_in_an_epoch_is_refused():
    cols, _, ids = make_columns(n=4, epochs=3)
    keep = np.ones(len(cols["id"]), bool)
    keep[4 * 2 + 1] = False  # epoch 2 misses ids[1]
    _expect({c: np.asarray(v)[keep] for c, v in cols.items()},
            r"epoch 2, record 0 has 3 ids but epoch 0 has 4")


def test_replaced_id_in_an_epoch_is_refused():
    cols, _, ids = make_columns(n=4, epochs=3)
    cols["id"] = cols["id"].copy()
    cols["id"][4 * 1 + 3] = 999  # epoch 1: ids[3] replaced by an unknown id
    _expect(cols, rf"epoch 1, record 0 records a different set of ids than epoch 0 "
                  rf"\(id {ids[3]} is missing\)")


def test_epoch_gap_is_refused():
    cols, _, _ = make_columns(n=3, epochs=3)
    cols["epoch"] = np.where(cols["epoch"] == 2, 3, cols["epoch"])
    _expect(cols, r"missing epoch\(s\) \[2\]")


def test_epochs_must_start_at_zero():
    cols, _, _ = make_columns(n=3, epochs=2)
    cols["epoch"] = cols["epoch"] + 1
    _expect(cols, r"missing epoch\(s\) \[0\]")


def test_gold_change_is_refused():
    cols, _, ids = make_columns(n=4, epochs=3)
    cols["gold"] = cols["gold"].copy()
    cols["gold"][4 * 2 + 2] = (cols["gold"][2] + 1) % 3
    _expect(cols, rf"gold label of id {ids[2]} changes between epochs")


def test_missing_record_and_records_metadata_mismatch():
    cols, _, _ = make_columns(n=3, epochs=2, records=2)
    keep = ~((cols["epoch"] == 1) & (cols["record"] == 1))
    _expect({c: np.asarray(v)[keep] for c, v in cols.items()},
            r"every epoch needs records 0..1", DynamicsMeta(num_classes=3, records_per_epoch=2))
    cols, _, _ = make_columns(n=3, epochs=2, records=2)
    _expect(cols, r"metadata says 1 record\(s\) per epoch but the table has 2")


def test_class_outside_num_classes_is_refused():
    cols, _, _ = make_columns(n=3, epochs=2, k=3)
    cols["gold"] = np.tile([0, 1, 2], 2)
    cols["pred"] = np.zeros(6, np.int32)
    _expect(cols, r"column 'gold' holds class 2, outside \[0, 2\)", DynamicsMeta(num_classes=2))
    cols["pred"] = np.where(np.arange(len(cols["pred"])) == 0, 7, cols["pred"])
    _expect(cols, r"column 'pred' holds class 7, outside \[0, 3\)")


def test_nulls_empty_and_metadata_are_checked():
    table = make_table()
    nulls = table.set_column(4, "p_gold", pa.array([None] * table.num_rows, pa.float32()))
    with pytest.raises(DataError, match="column 'p_gold' has missing values"):
        validate_dynamics(nulls, source="x.parquet")
    with pytest.raises(DataError, match="empty"):
        validate_dynamics(table.slice(0, 0))
    with pytest.raises(DataError, match="no datamap schema metadata"):
        validate_dynamics(table.replace_schema_metadata(None))
    with pytest.raises(DataError, match="missing dynamics column"):
        validate_dynamics(table.drop_columns(["loss"]))
    with pytest.raises(DataError, match="unknown recording mode"):
        validate_dynamics(with_metadata(table, {"num_classes": 3, "mode": "bogus"}))


def test_expected_ids(tmp_path):
    table = make_table(n=4)
    ids = np.unique(table.column("id").to_numpy())
    validate_dynamics(table, expected_ids=ids[::-1])
    with pytest.raises(DataError, match=r"1 missing, e\.g\. \[99\]"):
        validate_dynamics(table, expected_ids=np.append(ids, 99))


# --------------------------------------------------------------------------------------------
# writing and reading


def test_write_is_deterministic_and_chunk_readable(tmp_path):
    table = make_table(n=50, epochs=3, records=2, logits=True)
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    write_dynamics(a, table, row_group_ids=16)
    shuffled = table.take(np.random.default_rng(0).permutation(table.num_rows))
    write_dynamics(b, shuffled, row_group_ids=16)
    assert a.read_bytes() == b.read_bytes()
    md = pq.ParquetFile(a).metadata
    assert md.num_row_groups == 6 * 4  # 6 slots x ceil(50 / 16) groups
    assert [md.row_group(i).num_rows for i in range(4)] == [16, 16, 16, 2]
    assert read_dynamics(a).equals(table)
    source = open_dynamics(a)
    assert type(source).__name__ == "_FileSource"
    assert (source.n_ids, source.n_epochs, source.records_per_epoch) == (50, 3, 2)
    chunks = list(source.chunks(["p_gold"], chunk_rows=6 * 32))
    assert [len(c.ids) for c in chunks] == [32, 18]
    p = table.column("p_gold").to_numpy().reshape(6, 50)
    np.testing.assert_array_equal(np.concatenate([c.values["p_gold"] for c in chunks], 1), p)
    burnt = list(source.chunks(["p_gold"], epochs=1))
    assert burnt[0].values["p_gold"].shape == (2, 50)


def test_table_source_chunks_match_file_source(tmp_path):
    table = make_table(n=40, epochs=2)
    write_dynamics(tmp_path / "d.parquet", table, row_group_ids=8)
    mem = list(open_dynamics(table).chunks(["pred", "loss"], chunk_rows=30))
    disk = list(open_dynamics(tmp_path / "d.parquet").chunks(["pred", "loss"], chunk_rows=30))
    assert len(mem) == 3 and len(disk) == 5  # 15 ids per chunk; whole groups of 8 on disk
    for name in ("pred", "loss"):
        np.testing.assert_array_equal(np.concatenate([c.values[name] for c in mem], 1),
                                      np.concatenate([c.values[name] for c in disk], 1))


def _write_raw(path, cols, meta, row_group_ids):
    """Write rows with the streaming writer, one batch per slot, bypassing validation."""
    with DynamicsWriter(path, meta, row_group_ids=row_group_ids) as writer:
        slot = cols["epoch"] * meta.records_per_epoch + cols["record"]
        for s in np.unique(slot):
            writer.write({c: np.asarray(v)[slot == s] for c, v in cols.items()})


@pytest.mark.parametrize("column, value, shown", [
    ("p_gold", np.nan, "nan"), ("p_gold", 1.25, "1.25"), ("p_gold", -0.5, "-0.5"),
    ("loss", np.inf, "inf"), ("el2n", 2.0, "2.0"), ("margin", -np.inf, "-inf"),
])
def test_values_that_no_recorder_writes_are_refused_on_every_path(tmp_path, column, value,
                                                                  shown):
    # NaN, infinity or a probability outside [0, 1]: refused by the chunked reader (in the
    # chunk that holds it, before any score is computed) and by whole-table validation
    cols, _, ids = make_columns(n=40, epochs=3)
    cols[column] = np.array(cols[column], dtype=np.float32)
    cols[column][80 + 35] = value
    path = tmp_path / "bad.parquet"
    _write_raw(path, cols, DynamicsMeta(num_classes=3), row_group_ids=8)
    message = rf"column '{column}' holds 1 value\(s\) .* \(first: {shown} for id {ids[35]}\)"
    with pytest.raises(DataError, match=message):
        list(open_dynamics(path).chunks([column]))
    with pytest.raises(DataError, match=message):
        validate_dynamics(raw_table(cols, DynamicsMeta(num_classes=3)))


def test_chunked_reader_catches_a_late_gold_change(tmp_path):
    cols, _, ids = make_columns(n=40, epochs=3)
    cols["gold"] = cols["gold"].copy()
    cols["gold"][80 + 35] = (cols["gold"][35] + 1) % 3  # epoch 2, in the last chunk
    path = tmp_path / "bad.parquet"
    _write_raw(path, cols, DynamicsMeta(num_classes=3), row_group_ids=8)
    source = open_dynamics(path)
    assert type(source).__name__ == "_FileSource"
    with pytest.raises(DataError, match=rf"bad.parquet: the gold label of id {ids[35]} changes"):
        list(source.chunks(["p_gold"]))


def test_chunked_reader_catches_a_swapped_id(tmp_path):
    cols, _, ids = make_columns(n=40, epochs=2)
    cols["id"] = cols["id"].copy()
    cols["id"][40 + 20] = cols["id"][40 + 20] + 1  # epoch 1: an id no one else has
    path = tmp_path / "bad.parquet"
    _write_raw(path, cols, DynamicsMeta(num_classes=3), row_group_ids=8)
    with pytest.raises(DataError, match=r"bad.parquet: epoch 1, record 0 records a different"):
        list(open_dynamics(path).chunks(["p_gold"]))


def test_foreign_layout_falls_back_to_whole_table_validation(tmp_path):
    cols, _, ids = make_columns(n=5, epochs=3)
    keep = np.ones(len(cols["id"]), bool)
    keep[5 + 2] = False  # epoch 1 misses an id: row-group pattern differs between slots
    cols = {c: np.asarray(v)[keep] for c, v in cols.items()}
    path = tmp_path / "missing.parquet"
    _write_raw(path, cols, DynamicsMeta(num_classes=3), row_group_ids=4)
    with pytest.raises(DataError, match=r"missing.parquet: epoch 1, record 0 has 4 ids"):
        open_dynamics(path)
    plain = tmp_path / "plain.parquet"  # a valid table written as a single row group
    table = make_table(n=5, epochs=3)
    pq.write_table(table, plain)
    source = open_dynamics(plain)
    assert type(source).__name__ == "_TableSource" and source.n_ids == 5


def test_reading_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="nope.parquet: dynamics table not found"):
        open_dynamics(tmp_path / "nope.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="junk.parquet: not a readable Parquet file"):
        open_dynamics(tmp_path / "junk.parquet")
    pq.write_table(make_table().drop_columns(["margin"]), tmp_path / "cols.parquet")
    with pytest.raises(DataError, match=r"cols.parquet: dynamics table lacks column\(s\) margin"):
        open_dynamics(tmp_path / "cols.parquet")


def test_writer_refuses_out_of_order_batches_and_leaves_nothing(tmp_path):
    cols, _, _ = make_columns(n=4, epochs=2)
    meta = DynamicsMeta(num_classes=3)
    slot0 = {c: np.asarray(v)[:4] for c, v in cols.items()}
    slot1 = {c: np.asarray(v)[4:] for c, v in cols.items()}
    path = tmp_path / "w.parquet"
    with pytest.raises(DataError, match="written after"), DynamicsWriter(path, meta) as w:
        w.write(slot1)
        w.write(slot0)
    assert not path.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="single \\(epoch, record\\) slot"), \
            DynamicsWriter(path, meta) as w:
        w.write(cols)
    with pytest.raises(DataError, match="strictly increasing"), DynamicsWriter(path, meta) as w:
        w.write({c: v[::-1] for c, v in slot0.items()})
    with pytest.raises(DataError, match="keep increasing"), DynamicsWriter(path, meta) as w:
        w.write(slot0)
        w.write(slot0)
    assert list(tmp_path.iterdir()) == []

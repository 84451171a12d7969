"""No input read two ways: list options given a scalar, one label/id rule for every format,
one role per column (datamap.data.labels, datamap.data.options, docs/own-data.md)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from datamap.data import TableSource
from datamap.data.image_folder import ImageFolderSource
from datamap.data.options import seed_value
from datamap.data.prepare import prepare
from datamap.errors import ConfigError, DataError

from .helpers import numeric_frame, sentiment_frame, write_image_folder


def test_a_bare_drop_label_is_a_list_of_one(tmp_path):
    frame = sentiment_frame(40)
    frame.loc[:4, "label"] = "xx"
    frame.to_csv(tmp_path / "t.csv", index=False)
    data = TableSource(train=str(tmp_path / "t.csv"), text_columns="sentence",
                       drop_labels="xx").load()
    assert data.train.class_names == ["negative", "positive"] and data.dropped == {"train": 5}


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_integral_labels_and_ids_are_one_class_in_every_format(tmp_path, suffix):
    frame = sentiment_frame(40).assign(label=[1.0, 0.0] * 20, uid=[float(i) for i in range(40)])
    frame = frame.astype({"label": object})
    frame.loc[0, "label"] = 1  # 1 beside 1.0 in one column
    path = tmp_path / f"t{suffix}"
    {".csv": lambda p: frame.to_csv(p, index=False),
     ".tsv": lambda p: frame.to_csv(p, sep="\t", index=False),
     ".jsonl": lambda p: frame.to_json(p, orient="records", lines=True),
     ".parquet": lambda p: frame.astype({"label": str}).to_parquet(p)}[suffix](path)
    test = tmp_path / "test.csv"
    sentiment_frame(10).assign(label=["0.0", "1"] * 5, uid=range(100, 110)).to_csv(
        test, index=False)
    data = TableSource(train=str(path), test=str(test), text_columns=["sentence"],
                       id_column="uid", classes=[0, "1.0"]).load()
    assert data.train.class_names == ["0", "1"]
    assert data.train.labels.tolist()[:3] == [1, 0, 1]
    assert data.train.ids.tolist() == list(range(40))
    assert data.test.labels.tolist() == [0, 1] * 5


def test_numbers_mixed_with_text_in_a_label_column_are_refused(tmp_path):
    sentiment_frame(20).assign(label=["0", "1"] * 9 + ["1", "unknown"]).to_csv(
        tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match="labels mix numbers"):
        TableSource(train=str(tmp_path / "t.csv"), text_columns=["sentence"]).load()


@pytest.mark.parametrize("options, fragment", [
    ({"text_columns": ["label"]}, "'label' is both data.source.label_column"),
    ({"feature_columns": ["f0", "uid"], "id_column": "uid"}, "'uid' is both"),
    ({"text_columns": ["sentence"], "id_column": "label"}, "'label' is both"),
])
def test_a_column_has_one_role(options, fragment):
    with pytest.raises(ConfigError, match=fragment):
        TableSource(train="t.csv", **options)


def test_a_text_cell_that_is_not_text_is_refused(tmp_path):
    pd.DataFrame({"sentence": [0.00001] * 10 + [2.5] * 10, "label": ["x", "y"] * 10}).to_json(
        tmp_path / "t.jsonl", orient="records", lines=True)
    with pytest.raises(DataError, match="text column 'sentence' holds 20 value"):
        TableSource(train=str(tmp_path / "t.jsonl"), text_columns=["sentence"]).load()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_feature_columns_are_the_training_files_matched_by_name(tmp_path, suffix):
    train = numeric_frame(60)
    train.to_csv(tmp_path / "train.csv", index=False)
    # the test file: its columns in another order, plus one the training file lacks
    other = numeric_frame(30, seed=1)
    other = other.assign(notes=99.0)[["notes", "f3", "y", "f1", "f0", "f2"]]
    path = tmp_path / f"test{suffix}"
    other.to_csv(path, index=False) if suffix == ".csv" else other.to_parquet(path)
    data = TableSource(train=str(tmp_path / "train.csv"), test=str(path), control=str(path),
                       label_column="y").load()
    expected = other[["f0", "f1", "f2", "f3"]].to_numpy(dtype="float32")
    assert data.train.input_shape == data.test.input_shape == (4,)
    assert (data.test.x == expected).all() and (data.controls["control"].x == expected).all()


@pytest.mark.parametrize("dtype, values", [
    ("Int64", [1, 0, None] * 10), ("string", ["x", "y", None] * 10),
    ("boolean", [True, False, None] * 10)])
def test_a_nullable_columns_missing_label_is_missing(tmp_path, dtype, values):
    # pandas restores nullable dtypes from Parquet metadata; their null is pd.NA
    sentiment_frame(30).assign(label=pd.array(values, dtype=dtype)).to_parquet(
        tmp_path / "t.parquet")
    data = TableSource(train=str(tmp_path / "t.parquet"), text_columns="sentence",
                       drop_labels=[""]).load()
    assert data.dropped == {"train": 10} and len(data.train) == 20


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_ids_of_19_digits_are_ids_in_every_format(tmp_path, suffix):
    ids = [2**63 - 1 - i for i in range(20)]  # int64's largest, 9223372036854775807
    frame = sentiment_frame(20).assign(uid=ids)
    path = tmp_path / f"t{suffix}"
    {".csv": lambda p: frame.to_csv(p, index=False),
     ".tsv": lambda p: frame.to_csv(p, sep="\t", index=False),
     ".jsonl": lambda p: frame.to_json(p, orient="records", lines=True),
     ".parquet": frame.to_parquet}[suffix](path)
    data = TableSource(train=str(path), text_columns="sentence", id_column="uid").load()
    assert data.train.ids.tolist() == ids


def test_an_id_beyond_int64_is_refused(tmp_path):
    sentiment_frame(4).assign(uid=["9223372036854775808", "1", "2", "3"]).to_csv(
        tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match="outside the 64-bit integer range"):
        TableSource(train=str(tmp_path / "t.csv"), text_columns="sentence",
                    id_column="uid").load()


def test_date_like_json_strings_are_text_as_in_csv(tmp_path):
    frame = sentiment_frame(20).assign(label=["2020-01-01", "2020-01-02"] * 10)
    frame.loc[3, "sentence"] = "2021-06-30"
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    read = {suffix: TableSource(train=str(tmp_path / f"t{suffix}"),
                                text_columns="sentence").load().train
            for suffix in (".csv", ".jsonl")}
    assert read[".jsonl"].class_names == read[".csv"].class_names == ["2020-01-01", "2020-01-02"]
    assert read[".jsonl"].text.tolist() == read[".csv"].text.tolist()
    assert read[".jsonl"].text[3] == "2021-06-30"


def test_class_folders_are_read_by_the_label_rule(tmp_path):
    write_image_folder(tmp_path / "imgs", per_class=2)
    train = tmp_path / "imgs" / "train"
    (train / "horizontal").rename(train / "01")
    (train / "vertical").rename(train / "02")
    (train / "diagonal").rename(train / "10")
    data = ImageFolderSource(str(tmp_path / "imgs"), mode="L", classes=["01", 2, "10.0"]).load()
    assert data.train.class_names == ["1", "2", "10"]
    assert data.train.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_a_bare_image_class_is_a_list_of_one(tmp_path):
    write_image_folder(tmp_path / "imgs", per_class=2)
    with pytest.raises(DataError, match=r"\['horizontal', 'vertical'\] are not in "
                                        r"data.source.classes \['diagonal'\]"):
        ImageFolderSource(str(tmp_path / "imgs"), mode="L", classes="diagonal").load()


@pytest.mark.parametrize("value", [True, 1.5, "abc", -1, 2**32, None])
def test_a_seed_is_an_integer_in_range(value):
    with pytest.raises(ConfigError, match=r"seed must be an integer in \[0, 2\*\*32\)"):
        seed_value(value)


def test_the_largest_seed_prepares(tmp_path):
    sentiment_frame(40).to_csv(tmp_path / "t.csv", index=False)
    source = TableSource(train=str(tmp_path / "t.csv"), text_columns="sentence").load()
    meta = prepare(source, tmp_path / "prepared", val=0.2, test=0.2, label_noise=0.1,
                   seed=2**32 - 1)
    assert meta["seed"] == 2**32 - 1


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_messages_name_the_physical_line_of_a_csv_row(tmp_path, suffix, sep):
    # a quoted cell over three lines (CSV only: TSV is unquoted) and a blank line come first
    cell = '"two\nlines\nhere"' if suffix == ".csv" else "one line"
    rows = [f"sentence{sep}label", f"a b{sep}x", "", f"{cell}{sep}y", f"ok{sep}", f"fine{sep}y"]
    (tmp_path / f"t{suffix}").write_text("\n".join(rows) + "\n")
    line = 7 if suffix == ".csv" else 5
    with pytest.raises(DataError, match=f"first at line {line}\\)"):
        TableSource(train=str(tmp_path / f"t{suffix}"), text_columns="sentence").load()


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_an_index_written_into_a_csv_is_no_feature_unless_named(tmp_path, suffix):
    frame = numeric_frame(60)
    path = tmp_path / f"t{suffix}"
    frame.to_csv(path, sep="," if suffix == ".csv" else "\t")  # pandas' index: an empty header
    with pytest.raises(DataError, match=r"column 1 has no name in the header \(pandas calls it "
                                        r"'Unnamed: 0'; an index written by to_csv\?\)"):
        TableSource(train=str(path), label_column="y").load()
    # listed features: the unnamed column is not read
    features = [c for c in frame.columns if c != "y"]
    data = TableSource(train=str(path), label_column="y", feature_columns=features).load()
    assert data.train.x.shape == (60, len(features))
    assert data.train.x[:, 0].tolist() == frame[features[0]].astype("float32").tolist()
    # written without the index: every column but the label is a feature, as before
    frame.to_csv(path, sep="," if suffix == ".csv" else "\t", index=False)
    data = TableSource(train=str(path), label_column="y").load()
    assert data.train.x.shape == (60, len(features))


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_integer_labels_and_ids_beside_a_null_stay_exact(tmp_path, suffix):
    # pandas reads an integer column with a null as float64, where 2**53 + 1 is 2**53
    import pyarrow as pa
    import pyarrow.parquet as pq

    big = 2**53
    labels = [big + i % 2 for i in range(40)]
    labels[5] = None
    table = pa.table({"sentence": sentiment_frame(40)["sentence"],
                      "label": pa.array(labels, pa.int64()),
                      "uid": pa.array(range(big, big + 40), pa.int64())})
    path = tmp_path / f"t{suffix}"
    if suffix == ".parquet":
        pq.write_table(table, path)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in table.to_pylist()))
    with pytest.raises(DataError, match="1 row.s. have no label in column 'label'"):
        TableSource(train=str(path), text_columns=["sentence"]).load()
    data = TableSource(train=str(path), text_columns=["sentence"], id_column="uid",
                       drop_labels=[""]).load()
    assert data.train.class_names == [str(big), str(big + 1)] and data.dropped == {"train": 1}
    assert data.train.ids.tolist() == [big + i for i in range(40) if i != 5]


@pytest.mark.parametrize("where, refusal", [
    ("train/stray.png", r"train: 1 image\(s\) directly in it \(first 'stray.png'\) have no "
                        r"class; move each into .*/train/<class>/"),
    ("train/vertical/more/001.png", r"train/vertical: folder 'more' inside this class folder "
                                    r"holds images, which are not read"),
])
def test_an_image_outside_a_class_folder_is_refused_not_left_out(tmp_path, where, refusal):
    root = write_image_folder(tmp_path / "images", per_class=4)
    source = ImageFolderSource(root=str(root))
    assert len(source.load().train.labels) == 12
    (root / where).parent.mkdir(parents=True, exist_ok=True)
    (root / where).write_bytes((root / "train" / "diagonal" / "000.png").read_bytes())
    (root / "train" / "notes.txt").write_text("not an image: skipped, counted in the log")
    with pytest.raises(DataError, match=refusal):
        ImageFolderSource(root=str(root)).load()

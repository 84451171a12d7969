"""No input read two ways: list options given a scalar, one label/id rule for every format,
one role per column (datamap.data.labels, datamap.data.options, docs/own-data.md)."""

from __future__ import annotations

import pandas as pd
import pytest

from datamap.data import TableSource
from datamap.errors import ConfigError, DataError

from .helpers import sentiment_frame


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

"""prepare: splits, label noise, control shift, Parquet contract, sources and their errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from datamap.data import (
    DigitsSource,
    FeatureNoise,
    ImageShift,
    PreparedDataModule,
    TabularFileSource,
    read_meta,
    read_split,
)
from datamap.data.prepare import inject_label_noise, prepare, stratified_split
from datamap.io import ConfigError, DataError


def test_prepared_contract(digits_prepared):
    meta = read_meta(digits_prepared)
    assert meta["num_classes"] == 10 and meta["input_shape"] == [1, 8, 8]
    splits = {s: read_split(digits_prepared, s, meta) for s in ("train", "val", "test", "control")}
    assert sum(len(splits[s]) for s in ("train", "val", "test")) == 1797
    # disjoint, and ids unique and sorted within each split
    train, val, test = (set(splits[s].ids) for s in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    for split in splits.values():
        assert (np.diff(split.ids) > 0).all()
    schema = pq.read_schema(digits_prepared / "train.parquet")
    assert str(schema.field("id").type) == "int64" and str(schema.field("label").type) == "int64"
    x_type = schema.field("x").type
    assert x_type.list_size == 64 and str(x_type.value_type) == "float"
    assert "clean_label" in schema.names
    assert "clean_label" not in pq.read_schema(digits_prepared / "test.parquet").names


def test_splits_are_stratified(digits_prepared):
    train = read_split(digits_prepared, "train")
    test = read_split(digits_prepared, "test")
    train_share = np.bincount(train.clean_labels, minlength=10) / len(train)
    test_share = np.bincount(test.labels, minlength=10) / len(test)
    assert np.abs(train_share - test_share).max() < 0.01


def test_label_noise_flips_exactly_the_rate(digits_prepared):
    train = read_split(digits_prepared, "train")
    meta = read_meta(digits_prepared)
    flipped = train.labels != train.clean_labels
    assert flipped.sum() == round(0.1 * len(train)) == meta["flipped"]


def test_inject_label_noise_properties():
    labels = np.arange(1000) % 4
    noisy, flipped = inject_label_noise(labels, 0.25, 4, seed=0)
    assert flipped.sum() == 250
    assert (noisy[flipped] != labels[flipped]).all() and (noisy[~flipped] == labels[~flipped]).all()
    assert set(np.unique(noisy)) <= {0, 1, 2, 3}
    again, _ = inject_label_noise(labels, 0.25, 4, seed=0)
    assert np.array_equal(noisy, again)
    untouched, none = inject_label_noise(labels, 0.0, 4, seed=0)
    assert not none.any() and np.array_equal(untouched, labels)


def test_control_is_a_shift_of_test(digits_prepared):
    test = read_split(digits_prepared, "test")
    control = read_split(digits_prepared, "control")
    assert np.array_equal(test.ids, control.ids) and np.array_equal(test.labels, control.labels)
    diff = np.abs(test.x - control.x).reshape(len(test), -1).mean(axis=1)
    assert (diff > 0.01).all()
    assert control.x.min() >= 0 and control.x.max() <= 1


def test_image_shift_without_change_is_identity():
    x = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    same = ImageShift(max_rotation=0, max_translation=0, noise_std=0)(x, np.random.default_rng(0))
    np.testing.assert_allclose(same, x, atol=1e-6)


def test_image_shift_translates_by_whole_pixels():
    x = np.zeros((1, 1, 8, 8), dtype=np.float32)
    x[0, 0, 3, 3] = 1.0
    shift = ImageShift(max_rotation=0, max_translation=1, noise_std=0)
    rng = np.random.default_rng(3)
    out = shift(x, rng)
    offset = np.random.default_rng(3)
    offset.uniform(0, 0, size=1)
    dy, dx = offset.integers(-1, 2, size=(1, 2))[0]
    assert out[0, 0, 3 + dy, 3 + dx] == pytest.approx(1.0, abs=1e-5)


def test_prepare_is_byte_identical(tmp_path):
    raw = DigitsSource().load()
    for name in ("a", "b"):
        prepare(raw, tmp_path / name, val=0.15, test=0.2, label_noise=0.1,
                control=ImageShift(), seed=3)
    for file in ("train.parquet", "val.parquet", "test.parquet", "control.parquet", "meta.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5, "lots"])
def test_bad_label_noise_is_refused_without_artifact(tmp_path, rate):
    with pytest.raises(ConfigError, match="data.label_noise"):
        prepare(DigitsSource().load(), tmp_path / "out", val=0.15, test=0.2, label_noise=rate,
                control=ImageShift(), seed=0)
    assert not (tmp_path / "out").exists()


def test_bad_split_fractions_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="data.split"):
        prepare(DigitsSource().load(), tmp_path / "out", val=0.6, test=0.5, label_noise=0.0,
                control=ImageShift(), seed=0)


def test_stratified_split_too_small():
    with pytest.raises(DataError, match="cannot split"):
        stratified_split(np.array([0, 1, 2, 3]), 0.2, 0.2, seed=0)


# ------------------------------------------------------------------------------- tabular source


def _write_table(tmp_path, n=120, suffix=".csv"):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "f1": rng.normal(size=n), "f2": rng.normal(size=n),
        "species": np.array(["cat", "dog", "eel"])[np.arange(n) % 3],
        "uid": np.arange(1000, 1000 + n),
    })
    path = tmp_path / f"data{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    return path, frame


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tabular_source_prepares(tmp_path, suffix):
    path, frame = _write_table(tmp_path, suffix=suffix)
    raw = TabularFileSource(str(path), label_column="species", id_column="uid").load()
    assert raw.class_names == ["cat", "dog", "eel"] and raw.input_shape == (2,)
    meta = prepare(raw, tmp_path / "prep", val=0.2, test=0.2, label_noise=0.0,
                   control=FeatureNoise(0.5), seed=0)
    train = read_split(tmp_path / "prep", "train", meta)
    assert set(train.ids) <= set(frame["uid"]) and train.clean_labels is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "missing.csv"}, "data file not found"),
        ({"label_column": "nope"}, "no label column 'nope'"),
        ({"feature_columns": ["f1", "zz"]}, "missing feature column"),
        ({"feature_columns": ["f1", "species"], "label_column": "uid"}, "not numeric"),
        ({"classes": ["cat", "dog"]}, "not in data.source.classes"),
        ({"id_column": "f1"}, "must hold integers"),
    ],
)
def test_tabular_source_errors(tmp_path, kwargs, message):
    path, _ = _write_table(tmp_path)
    args = {"path": str(path), "label_column": "species", "id_column": "uid", **kwargs}
    if kwargs.get("path"):
        args["path"] = str(tmp_path / kwargs["path"])
    with pytest.raises(DataError, match=message):
        TabularFileSource(**args).load()


def test_duplicate_ids_refused(tmp_path):
    path = tmp_path / "dup.csv"
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "label": [0, 1, 0], "id": [1, 1, 2]}).to_csv(path)
    with pytest.raises(DataError, match="not unique"):
        TabularFileSource(str(path), id_column="id", feature_columns=["a"]).load()


# ------------------------------------------------------------------------------- data module


def test_datamodule_batches_carry_ids(digits_prepared):
    dm = PreparedDataModule(digits_prepared, batch_size=50, seed=1)
    loader = dm.train_dataloader()
    seen = np.concatenate([b["id"].numpy() for b in loader])
    assert np.array_equal(np.sort(seen), read_split(digits_prepared, "train").ids)
    batch = next(iter(loader))
    assert batch["x"].shape[1:] == (1, 8, 8) and batch["label"].dtype.is_floating_point is False


def test_datamodule_shuffle_depends_on_epoch_only(digits_prepared):
    dm = PreparedDataModule(digits_prepared, batch_size=64, seed=1)
    sampler = dm.train_dataloader().sampler
    sampler.set_epoch(3)
    first = list(sampler)
    sampler.set_epoch(0)
    other = list(sampler)
    sampler.set_epoch(3)
    assert list(sampler) == first and first != other


def test_datamodule_subset_and_stale_ids(digits_prepared):
    ids = read_split(digits_prepared, "train").ids[:10]
    dm = PreparedDataModule(digits_prepared, train_ids=ids)
    assert np.array_equal(dm.split("train").ids.numpy(), ids)
    with pytest.raises(DataError, match="subset is stale"):
        PreparedDataModule(digits_prepared, train_ids=np.array([10**9])).split("train")

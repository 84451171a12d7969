"""prepare: splits, label noise, control sets, the Parquet contract, every source, loaders."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from datamap.data import (
    DigitsSource,
    FeatureNoise,
    ImageFolderSource,
    ImageShift,
    MnistDigits,
    PreparedDataModule,
    TableSource,
    read_meta,
    read_split,
)
from datamap.data.mnist import optdigits_counts
from datamap.data.prepare import inject_label_noise, prepare, prepare_from_config, stratified_split
from datamap.data.splits import eval_splits, read_controls
from datamap.errors import ConfigError, DataError
from datamap.io import schema_metadata

from .helpers import compose_cfg, numeric_frame, pairs_frame, sentiment_frame, write_image_folder

#: A few MNIST digits: enough to check the control-set plumbing quickly.
SMALL_MNIST = {"mnist": MnistDigits(limit=200)}


def test_prepared_contract(digits_prepared):
    meta = read_meta(digits_prepared)
    assert meta["num_classes"] == 10 and meta["input_shape"] == [1, 8, 8]
    assert meta["input_kind"] == "image"
    splits = {s: read_split(digits_prepared, s, meta) for s in ("train", "val", "test")}
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


def test_mnist_is_the_default_control_set(digits_prepared):
    assert eval_splits(digits_prepared) == ["test", "control/mnist"]
    index = read_controls(digits_prepared)
    assert index["mnist"]["examples"] == 5000 and "MNIST" in index["mnist"]["description"]
    control = read_split(digits_prepared, "control/mnist")
    assert len(control) == 5000 and np.array_equal(control.ids, np.arange(5000))
    assert np.array_equal(np.bincount(control.labels), np.full(10, 500))
    # the optdigits format: counts 0..16 scaled by 1/16, like the training digits
    assert set(np.unique(np.round(control.x * 16, 4))) <= set(range(17))
    table = pq.read_table(digits_prepared / "controls" / "mnist.parquet")
    assert schema_metadata(table)["description"] == index["mnist"]["description"]
    # control details stay out of meta.json (a dependency of training)
    assert "mnist" not in (digits_prepared / "meta.json").read_text().lower()


def test_optdigits_counts_crop_square_and_count():
    image = np.zeros((1, 28, 28), dtype=np.uint8)
    image[0, 5:15, 10:20] = 255  # a solid 10x10 square: fills the whole bitmap once cropped
    assert (optdigits_counts(image) == 16).all()
    tall = np.zeros((1, 28, 28), dtype=np.uint8)
    tall[0, 2:26, 13:15] = 255  # a thin vertical bar stays thin: padded to a square, centred
    counts = optdigits_counts(tall)[0]
    assert (counts[:, [0, 1, 6, 7]] == 0).all() and (counts[:, 3:5].sum(axis=1) > 0).all()
    assert (optdigits_counts(np.zeros((2, 28, 28), dtype=np.uint8)) == 0).all()


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


def test_several_named_control_sets(tmp_path):
    cfg = compose_cfg("data=digits_rotated", "data.controls.mnist.limit=100")
    prepare_from_config(cfg.data, tmp_path / "p", seed=0)
    assert eval_splits(tmp_path / "p") == ["test", "control/mnist", "control/rotated"]
    test = read_split(tmp_path / "p", "test")
    rotated = read_split(tmp_path / "p", "control/rotated")
    # the rotated view pairs each test image with a shifted copy
    assert np.array_equal(test.ids, rotated.ids) and np.array_equal(test.labels, rotated.labels)
    diff = np.abs(test.x - rotated.x).reshape(len(test), -1).mean(axis=1)
    assert (diff > 0.01).all() and rotated.x.min() >= 0 and rotated.x.max() <= 1
    assert "rotated by U(-15, 15)" in read_controls(tmp_path / "p")["rotated"]["description"]


def test_changing_a_control_set_leaves_training_inputs_alone(tmp_path):
    raw = DigitsSource().load()
    prepare(raw, tmp_path / "a", val=0.15, test=0.2, label_noise=0.1, seed=3,
            controls={"shifted": ImageShift(noise_std=0.1)})
    prepare(raw, tmp_path / "b", val=0.15, test=0.2, label_noise=0.1, seed=3,
            controls={"shifted": ImageShift(noise_std=0.3)})
    for file in ("train.parquet", "val.parquet", "test.parquet", "meta.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    assert (tmp_path / "a" / "controls" / "shifted.parquet").read_bytes() != \
        (tmp_path / "b" / "controls" / "shifted.parquet").read_bytes()


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
                controls=SMALL_MNIST, seed=3)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                   if p.is_file())
    assert [str(f) for f in files] == [
        "controls/index.json", "controls/mnist.parquet", "corrections.parquet", "meta.json",
        "test.parquet", "train.parquet", "val.parquet"]
    for file in files:
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5, "lots"])
def test_bad_label_noise_is_refused_without_artifact(tmp_path, rate):
    with pytest.raises(ConfigError, match="data.label_noise"):
        prepare(DigitsSource().load(), tmp_path / "out", val=0.15, test=0.2, label_noise=rate,
                seed=0)
    assert not (tmp_path / "out").exists()


def test_bad_split_fractions_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="data.split"):
        prepare(DigitsSource().load(), tmp_path / "out", val=0.6, test=0.5, label_noise=0.0,
                seed=0)


def test_stratified_split_too_small():
    with pytest.raises(DataError, match="cannot split"):
        stratified_split(np.array([0, 1, 2, 3]), 0.2, 0.2, seed=0)


# ------------------------------------------------------------------------------- table files


def _table(tmp_path, **kwargs):
    """Prepare a TableSource into tmp_path/prep; returns (meta, prepared dir)."""
    out = tmp_path / "prep"
    meta = prepare(TableSource(**kwargs).load(), out, val=0.15, test=0.15, label_noise=0.0,
                   seed=0)
    return meta, out


def test_text_csv_prepares_a_text_split(tmp_path):
    sentiment_frame(120).to_csv(tmp_path / "sst.csv", index=False)
    meta, out = _table(tmp_path, train=str(tmp_path / "sst.csv"), text_columns=["sentence"])
    assert meta["input_kind"] == "text" and meta["input_shape"] == [1]
    assert meta["class_names"] == ["negative", "positive"]
    schema = pq.read_schema(out / "train.parquet")
    assert str(schema.field("text").type) == "string" and "x" not in schema.names
    train = read_split(out, "train")
    frame = pd.read_csv(tmp_path / "sst.csv")
    # ids are the row numbers: each text is the file's text at that row
    assert (frame["sentence"].to_numpy()[train.ids] == train.text).all()
    assert eval_splits(out) == ["test"]


def test_sentence_pairs_jsonl_drop_labels_and_ids(tmp_path):
    frame = pairs_frame(150, dropped=9)
    frame.to_json(tmp_path / "snli.jsonl", orient="records", lines=True)
    meta, out = _table(tmp_path, train=str(tmp_path / "snli.jsonl"), id_column="pairID",
                       text_columns=["sentence1", "sentence2"], label_column="gold_label",
                       drop_labels=["-"])
    assert meta["input_shape"] == [2] and meta["dropped"]["train"] == 9
    assert meta["class_names"] == ["contradiction", "entailment", "neutral"]
    splits = [read_split(out, s) for s in ("train", "val", "test")]
    ids = np.concatenate([s.ids for s in splits])
    assert len(ids) == 141 and set(ids) == set(frame["pairID"][9:])
    row = frame.set_index("pairID").loc[splits[0].ids[0]]
    assert splits[0].text[0] == row["sentence1"] and splits[0].text_pair[0] == row["sentence2"]


def test_numeric_parquet_and_integer_labels_sort_numerically(tmp_path):
    frame = numeric_frame(150)
    frame["y"] = frame["y"].map({0: 2, 1: 10, 2: 7})
    frame.to_parquet(tmp_path / "num.parquet")
    meta, out = _table(tmp_path, train=str(tmp_path / "num.parquet"), label_column="y")
    assert meta["class_names"] == ["2", "7", "10"] and meta["input_shape"] == [4]
    train = read_split(out, "train")
    np.testing.assert_allclose(train.x, frame.loc[train.ids, ["f0", "f1", "f2", "f3"]],
                               rtol=1e-6)


def test_given_files_and_shared_classes(tmp_path):
    frame = sentiment_frame(200)
    frame[:120].to_csv(tmp_path / "train.tsv", sep="\t", index=False)
    frame[120:160].to_csv(tmp_path / "dev.tsv", sep="\t", index=False)
    frame[160:].to_json(tmp_path / "test.jsonl", orient="records", lines=True)
    hard = frame[160:].assign(sentence=lambda f: f["sentence"].str.upper())
    hard.to_parquet(tmp_path / "hard.parquet")
    meta, out = _table(tmp_path, train=str(tmp_path / "train.tsv"),
                       val=str(tmp_path / "dev.tsv"), test=str(tmp_path / "test.jsonl"),
                       control={"shouting": str(tmp_path / "hard.parquet")},
                       text_columns="sentence", classes=["positive", "negative"])
    assert meta["class_names"] == ["positive", "negative"] and meta["split_fractions"] == {}
    assert meta["sizes"] == {"train": 120, "val": 40}
    assert eval_splits(out) == ["test", "control/shouting"]
    shouting = read_split(out, "control/shouting")
    assert shouting.text[0].isupper() and len(shouting) == 40
    assert (shouting.labels == np.where(frame["label"][160:] == "positive", 0, 1)).all()


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_image_folder_prepares_images(tmp_path, mode):
    root = write_image_folder(tmp_path / "imgs", per_class=12, splits=("train", "control"))
    source = ImageFolderSource(str(root), mode=mode, size=[6, 6])
    meta = prepare(source.load(), tmp_path / "prep", val=0.2, test=0.2, label_noise=0.0, seed=0)
    channels = 1 if mode == "L" else 3
    assert meta["input_shape"] == [channels, 6, 6]
    assert meta["class_names"] == ["diagonal", "horizontal", "vertical"]
    train = read_split(tmp_path / "prep", "train")
    assert train.x.shape[1:] == (channels, 6, 6) and 0 <= train.x.min() and train.x.max() <= 1
    assert train.files[0].startswith("train/") and train.files[0].endswith(".png")
    assert eval_splits(tmp_path / "prep") == ["test", "control/control"]


def test_feature_noise_control_for_tables(tmp_path):
    numeric_frame(150).to_csv(tmp_path / "num.csv", index=False)
    source = TableSource(train=str(tmp_path / "num.csv"), label_column="y")
    prepare(source.load(), tmp_path / "prep", val=0.2, test=0.2, label_noise=0.0, seed=0,
            controls={"noisy": FeatureNoise(0.5)})
    test = read_split(tmp_path / "prep", "test")
    noisy = read_split(tmp_path / "prep", "control/noisy")
    assert np.array_equal(test.ids, noisy.ids) and not np.allclose(test.x, noisy.x)


def test_text_data_refuses_a_shift_control(tmp_path):
    sentiment_frame(60).to_csv(tmp_path / "sst.csv", index=False)
    source = TableSource(train=str(tmp_path / "sst.csv"), text_columns=["sentence"])
    with pytest.raises(ConfigError, match="give control examples as a file"):
        prepare(source.load(), tmp_path / "prep", val=0.2, test=0.2, label_noise=0.0, seed=0,
                controls={"noisy": FeatureNoise(0.5)})
    assert not (tmp_path / "prep").exists()


# ------------------------------------------------------------------------------- data module


def test_datamodule_batches_carry_ids(digits_prepared):
    dm = PreparedDataModule(digits_prepared, batch_size=50, seed=1)
    loader = dm.train_dataloader()
    seen = np.concatenate([b["id"].numpy() for b in loader])
    assert np.array_equal(np.sort(seen), read_split(digits_prepared, "train").ids)
    batch = next(iter(loader))
    assert batch["x"].shape[1:] == (1, 8, 8) and batch["label"].dtype.is_floating_point is False


def test_datamodule_text_batches_and_encoder(tmp_path):
    pairs_frame(90, dropped=0).to_csv(tmp_path / "pairs.csv", index=False)
    _, out = _table(tmp_path, train=str(tmp_path / "pairs.csv"), label_column="gold_label",
                    text_columns=["sentence1", "sentence2"])
    train = read_split(out, "train")
    dm = PreparedDataModule(out, batch_size=8, shuffle=False)
    batch = next(iter(dm.train_dataloader()))
    assert batch["text"] == train.text[:8].tolist()
    assert batch["text_pair"] == train.text_pair[:8].tolist()

    def count_words(b):  # an encoder sees the raw batch and hands on what the model reads
        return {"id": b["id"], "label": b["label"], "words": [len(t.split()) for t in b["text"]]}

    encoded = next(iter(PreparedDataModule(out, batch_size=8, shuffle=False,
                                           encoder=count_words).train_dataloader()))
    assert encoded["words"] == [len(t.split()) for t in train.text[:8]]


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


def test_meta_json_is_sorted_json(digits_prepared):
    text = (digits_prepared / "meta.json").read_text()
    assert json.loads(text) and text == json.dumps(json.loads(text), indent=2,
                                                   sort_keys=True) + "\n"

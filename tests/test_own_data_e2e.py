"""End to end on a user's own data: `dvc repro` with unchanged stages on generated files.

Five runs, as the README's "Your own data" section describes them: a text CSV with text_bow
(plus a control file), SNLI-style sentence pairs in JSON lines with `-` labels dropped, a
numeric Parquet table with mlp, an image folder with cnn, and a tiny local transformer with hf.
Tiny data, two epochs, one or two selection specs: each run takes well under a minute.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from .helpers import (
    copy_repo,
    numeric_frame,
    pairs_frame,
    sentiment_frame,
    sh,
    stages_run,
    write_image_folder,
    write_tiny_transformer,
)

pytestmark = pytest.mark.slow

#: one seed and no sweep grid: these tests are about reading the data, not about the report
ONE_RUN = ["trainer.max_epochs=2", "selection.sweep.fractions=[]", "selection.retrain_seeds=[0]"]
FAST = [*ONE_RUN, "~selection.specs", "+selection.specs={full: {random: 1.0}}"]
TWO_SPECS = [*ONE_RUN, "~selection.specs",
             "+selection.specs={full: {random: 1.0}, hard_50: {hard_to_learn: 0.5}}"]


def reproduce(tmp_path: Path, write_inputs: Callable[[Path], None], *overrides: str) -> Path:
    """A copy of the project with the inputs written under ``inputs/`` and params composed
    with ``overrides``, reproduced with ``dvc repro``; every stage must have run."""
    repo = copy_repo(tmp_path / "repo", *overrides)
    (repo / "inputs").mkdir()
    write_inputs(repo / "inputs")
    result = sh("dvc", "repro", cwd=repo)
    ran = stages_run(result.stdout)
    assert {"prepare", "train", "cartography", "select@full", "retrain@full", "evaluate",
            "report"} <= ran, result.stdout[-3000:]
    return repo


def read(repo: Path, name: str):
    path = repo / "data" / name
    return json.loads(path.read_text()) if path.suffix == ".json" else path.read_text()


def test_text_csv_with_text_bow_and_a_control_file(tmp_path):
    def write(inputs: Path) -> None:
        frame = sentiment_frame(400, seed=1)
        frame.to_csv(inputs / "sst.csv", index=False)
        sentiment_frame(80, seed=2).assign(sentence=lambda f: f["sentence"].str.upper()).to_csv(
            inputs / "shouting.csv", index=False)

    repo = reproduce(tmp_path, write, *TWO_SPECS, "data=table", "model=text_bow",
                     "data.source.train=inputs/sst.csv", "data.source.text_columns=[sentence]",
                     "data.source.control={shouting: inputs/shouting.csv}", "data.label_noise=0.1")
    meta = read(repo, "prepared/meta.json")
    assert meta["input_kind"] == "text" and meta["class_names"] == ["negative", "positive"]
    report = read(repo, "report/metrics.json")
    assert set(report) == {"full", "hard_50"}
    assert report["full"]["test"]["accuracy"]["mean"] > 0.8  # cue words are easy to learn
    assert set(report["full"]["control"]) == {"shouting"}
    assert "| shouting acc |" in read(repo, "report/summary.md")
    # the review queue shows annotators the sentences themselves
    queue = pd.read_csv(repo / "data" / "cartography" / "review" / "hard_to_learn.csv")
    sentences = set(pd.read_csv(repo / "inputs" / "sst.csv")["sentence"])
    assert len(queue) > 0 and set(queue["text"]) <= sentences
    assert not (repo / "data" / "cartography" / "review" / "hard_to_learn.png").exists()
    # label noise: hard-to-learn concentrates the flipped labels
    assert report["hard_50"]["flipped_share"] > report["full"]["flipped_share"]
    assert stages_run(sh("dvc", "repro", cwd=repo).stdout) == set()


def test_sentence_pairs_jsonl_with_dropped_labels(tmp_path):
    def write(inputs: Path) -> None:
        pairs_frame(360, seed=3, dropped=15).to_json(inputs / "snli_train.jsonl",
                                                     orient="records", lines=True)
        pairs_frame(90, seed=4, dropped=5).to_json(inputs / "snli_test.jsonl",
                                                   orient="records", lines=True)

    repo = reproduce(tmp_path, write, *FAST, "data=table", "model=text_bow",
                     "data.source.train=inputs/snli_train.jsonl",
                     "data.source.test=inputs/snli_test.jsonl",
                     "data.source.text_columns=[sentence1,sentence2]",
                     "data.source.label_column=gold_label", "data.source.id_column=pairID",
                     "data.source.drop_labels=['-']")
    meta = read(repo, "prepared/meta.json")
    assert meta["input_shape"] == [2] and meta["dropped"]["train"] == 15
    assert meta["class_names"] == ["contradiction", "entailment", "neutral"]
    test = pd.read_parquet(repo / "data" / "prepared" / "test.parquet")
    assert len(test) == 85 and {"text", "text_pair"} <= set(test.columns)
    report = read(repo, "report/metrics.json")
    assert report["full"]["test"]["accuracy"]["mean"] > 0.5 and report["full"]["control"] == {}
    assert "No control set" in read(repo, "report/summary.md")
    queue = pd.read_csv(repo / "data" / "cartography" / "review" / "hard_to_learn.csv")
    assert {"text", "text_pair"} <= set(queue.columns)


def test_numeric_parquet_with_mlp(tmp_path):
    repo = reproduce(tmp_path, lambda inputs: numeric_frame(300, seed=5).to_parquet(
        inputs / "blobs.parquet"), *FAST, "data=table", "model=mlp",
        "data.source.train=inputs/blobs.parquet", "data.source.label_column=y",
        "+data.controls.noisy={_target_: datamap.data.FeatureNoise, std: 1.0}")
    meta = read(repo, "prepared/meta.json")
    assert meta["input_kind"] == "tabular" and meta["input_shape"] == [4]
    report = read(repo, "report/metrics.json")
    assert report["full"]["test"]["accuracy"]["mean"] > 0.6
    assert set(report["full"]["control"]) == {"noisy"}
    # noise of one feature-std on every feature is a real shift
    full = report["full"]
    assert full["control"]["noisy"]["accuracy"]["mean"] < full["test"]["accuracy"]["mean"]


def test_image_folder_with_cnn(tmp_path):
    repo = reproduce(tmp_path, lambda inputs: write_image_folder(
        inputs / "bars", per_class=50, splits=("train", "test", "control"), size=10),
        *FAST, "data=image_folder", "model=cnn", "data.source.root=inputs/bars",
        "data.source.mode=L", "data.label_noise=0.1")
    meta = read(repo, "prepared/meta.json")
    assert meta["input_shape"] == [1, 10, 10] and meta["sizes"]["train"] + meta["sizes"][
        "val"] == 150
    report = read(repo, "report/metrics.json")
    assert set(report["full"]["control"]) == {"control"}
    review = repo / "data" / "cartography" / "review"
    assert (review / "hard_to_learn.png").read_bytes()[:4] == b"\x89PNG"
    queue = pd.read_csv(review / "hard_to_learn.csv")
    assert queue["file"].str.startswith("train/").all()


def test_tiny_local_transformer_with_hf(tmp_path):
    def write(inputs: Path) -> None:
        sentiment_frame(160, seed=6).to_csv(inputs / "sst.csv", index=False)
        write_tiny_transformer(inputs / "tiny-bert")

    repo = reproduce(tmp_path, write, *FAST, "data=table", "model=hf",
                     "data.source.train=inputs/sst.csv", "data.source.text_columns=[sentence]",
                     "model.net.pretrained=inputs/tiny-bert", "model.net.max_length=24",
                     "model.optimizer.lr=0.001")
    report = read(repo, "report/metrics.json")
    assert 0 <= report["full"]["test"]["accuracy"]["mean"] <= 1
    dynamics = pd.read_parquet(repo / "data" / "train" / "dynamics.parquet")
    sizes = read(repo, "prepared/meta.json")["sizes"]
    assert dynamics["epoch"].nunique() == 2 and dynamics["id"].nunique() == sizes["train"]
    # one token file per split, shared by train, every retrain and evaluate
    stored = sorted((repo / ".datamap" / "tokens").glob("*.parquet"))
    assert sorted(pq.read_metadata(p).num_rows for p in stored) == sorted(
        pq.read_metadata(repo / "data" / "prepared" / f"{s}.parquet").num_rows
        for s in ("train", "val", "test"))

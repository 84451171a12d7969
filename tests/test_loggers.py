"""Every `logger=` option, proven by a 1-epoch training on the digits and the files it writes.

Each test runs the real ``fit_classifier`` with the composed config (default callbacks: the
media callbacks included) and asserts on what the logger left on disk: metrics under their
stable names, the prediction-samples table, the image-predictions grid and the confusion
matrix in the logger's own form, and ``runs.json``. W&B runs offline and writes nowhere but the
test's directory; MLflow uses a local file store.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from .helpers import compose_cfg

METRICS = ("train/loss", "train/acc", "val/loss", "val/acc", "val/macro_f1")
MEDIA = ("val/prediction_samples", "val/image_predictions", "val/confusion_matrix")


def fit_once(tmp_path: Path, prepared: Path, *overrides: str) -> Path:
    """One epoch with ``overrides``, run from ``tmp_path``; returns the run's ``logs/``."""
    from datamap.callbacks.curves import TrainingCurves
    from datamap.training.fit import fit_classifier

    cfg = compose_cfg("trainer.max_epochs=1", *overrides)
    fit_classifier(cfg, prepared_dir=prepared, out_dir=tmp_path / "train",
                   callbacks=[TrainingCurves(tmp_path / "curves.csv")])
    return tmp_path / "train" / "logs"


def png(path: Path) -> bytes:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return data


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run from tmp_path (W&B and MLflow keep their stores in the working directory)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_csv_logger_writes_metrics_media_and_curves(in_tmp, digits_prepared):
    logs = fit_once(in_tmp, digits_prepared)  # logger=csv is the default
    metrics = pd.read_csv(logs / "csv" / "metrics.csv")
    assert set(METRICS) <= set(metrics.columns), metrics.columns
    assert any(c.startswith("lr-") for c in metrics.columns)  # lr_monitor
    assert metrics["epoch"].dropna().unique().tolist() == [0]

    media = logs / "csv" / "media" / "val"
    samples = pd.read_csv(media / "prediction_samples" / "epoch_000.csv")
    assert list(samples.columns) == ["id", "input", "true", "pred", "confidence"]
    assert 0 < len(samples) <= 16
    assert samples["id"].is_monotonic_increasing and (samples["true"] != samples["pred"]).all()
    assert samples["input"].str.fullmatch(r"\[1x8x8 image\]").all()
    for name in ("prediction_samples", "image_predictions", "confusion_matrix"):
        assert b"Software" not in png(media / name / "epoch_000.png")
    assert json.loads((logs / "runs.json").read_text()) == {}

    curves = pd.read_csv(in_tmp / "curves.csv")
    assert list(curves.columns) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc",
                                    "val_macro_f1", "lr"]
    assert curves["epoch"].tolist() == [0] and curves.notna().all().all()
    assert curves["val_acc"].iloc[0] == pytest.approx(metrics["val/acc"].dropna().iloc[0])


def test_media_are_deterministic(in_tmp, digits_prepared):
    first = fit_once(in_tmp / "a", digits_prepared) / "csv" / "media"
    second = fit_once(in_tmp / "b", digits_prepared) / "csv" / "media"
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 4
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_tensorboard_logger_writes_scalars_images_and_text(in_tmp, digits_prepared):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = fit_once(in_tmp, digits_prepared, "logger=tensorboard")
    events = list((logs / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(events[0]), size_guidance={"images": 0, "tensors": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    assert set(METRICS) <= set(tags["scalars"]), tags["scalars"]
    assert set(MEDIA) <= set(tags["images"]), tags["images"]
    text = accumulator.Tensors("val/prediction_samples/text_summary")[0]
    table = text.tensor_proto.string_val[0].decode()
    assert table.startswith("| id | input | true | pred | confidence |")


def test_wandb_logger_offline_writes_tables_images_and_summary(in_tmp, digits_prepared,
                                                               monkeypatch):
    from datamap.tracking.loggers import log_run_summary

    # offline, and W&B's own caches inside the test directory: nothing leaves the machine
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(in_tmp / "wandb-home"))
    logs = fit_once(in_tmp, digits_prepared, "logger=wandb")
    runs = json.loads((logs / "runs.json").read_text())["wandb"]
    assert runs["mode"] == "offline" and runs["project"] == "datamap"
    (run_dir,) = (in_tmp / "wandb").glob(f"offline-run-*-{runs['id']}")
    assert (run_dir / f"run-{runs['id']}.wandb").stat().st_size > 0
    media = run_dir / "files" / "media"
    for name in ("prediction_samples", "image_predictions", "confusion_matrix"):
        assert list((media / "images" / "val").glob(f"{name}_*.png")), name
    (table,) = (media / "table" / "val").glob("prediction_samples_*.table.json")
    content = json.loads(table.read_text())
    assert content["columns"] == ["id", "input", "true", "pred", "confidence"]
    assert content["data"] and all(row[1] == "Image" for row in content["data"])  # thumbnails

    # the cartography stage's summary goes to the same run (resumed by id, offline)
    assert log_run_summary(logs / "runs.json", {"cartography/regions/ambiguous": 7.0}) == [
        "wandb"]
    resumed = [d for d in (in_tmp / "wandb").glob(f"offline-run-*-{runs['id']}") if d != run_dir]
    assert len(resumed) == 1 and (resumed[0] / f"run-{runs['id']}.wandb").is_file()


def test_mlflow_logger_writes_a_local_file_store(in_tmp, digits_prepared):
    from datamap.tracking.loggers import log_run_summary

    logs = fit_once(in_tmp, digits_prepared, "logger=mlflow")
    runs = json.loads((logs / "runs.json").read_text())["mlflow"]
    run = in_tmp / "mlruns" / runs["experiment_id"] / runs["run_id"]
    for metric in METRICS:
        assert (run / "metrics" / metric).is_file(), metric
    media = run / "artifacts" / "media" / "val"
    for name in ("prediction_samples", "image_predictions", "confusion_matrix"):
        png(media / name / "epoch_000.png")
    samples = pd.read_csv(media / "prediction_samples" / "epoch_000.csv")
    assert list(samples.columns) == ["id", "input", "true", "pred", "confidence"]
    assert (run / "params" / "seed").read_text() == "42"

    assert log_run_summary(logs / "runs.json", {"cartography/regions/ambiguous": 7.0}) == [
        "mlflow"]
    line = (run / "metrics" / "cartography" / "regions" / "ambiguous").read_text().split()
    assert float(line[1]) == 7.0


def test_dvclive_logger_writes_plots_and_images_without_dvc_yaml(in_tmp, digits_prepared):
    logs = fit_once(in_tmp, digits_prepared, "logger=dvclive")
    live = logs / "dvclive"
    for metric in METRICS:
        rows = pd.read_csv(live / "plots" / "metrics" / f"{metric}.tsv", sep="\t")
        assert len(rows) == 1 and metric.split("/")[1] in rows.columns
    for name in ("prediction_samples", "image_predictions", "confusion_matrix"):
        png(live / "plots" / "images" / "val" / name / "epoch_000.png")
    assert json.loads((live / "metrics.json").read_text())["val"]["macro_f1"] > 0
    assert not list(in_tmp.rglob("dvc.yaml"))


def test_many_loggers_at_once(in_tmp, digits_prepared):
    logs = fit_once(in_tmp, digits_prepared, "logger=many")
    assert (logs / "csv" / "metrics.csv").is_file()
    assert (logs / "csv" / "media" / "val" / "confusion_matrix" / "epoch_000.png").is_file()
    assert len(list((logs / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_no_logger_still_trains_and_writes_curves(in_tmp, digits_prepared):
    logs = fit_once(in_tmp, digits_prepared, "logger=none")
    assert sorted(p.name for p in logs.iterdir()) == ["runs.json"]
    assert pd.read_csv(in_tmp / "curves.csv")["epoch"].tolist() == [0]

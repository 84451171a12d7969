"""Media callbacks and the tracking module on small inputs: previews of every input kind, the
drawn images, the misclassified-samples table for text, logger extras, callback selection and
the progress display."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from datamap.callbacks.confusion_matrix import confusion_counts
from datamap.callbacks.media import (
    Predictions,
    heatmap_image,
    image_grid,
    preview_text,
    table_image,
    thumbnail,
)
from datamap.errors import ConfigError
from datamap.tracking.loggers import markdown_table, png_bytes, summary_values


def test_previews_of_each_input_kind():
    image = {"x": torch.arange(64, dtype=torch.float32).reshape(1, 8, 8)}
    assert preview_text(image) == "[1x8x8 image]"
    tabular = {"x": torch.tensor([0.5, 1.25, -3.0, 4.0, 5.0, 6.0, 7.0, 8.0])}
    assert preview_text(tabular) == "[0.5, 1.25, -3, 4, 5, 6, …] (8 values)"
    assert preview_text({"x": torch.tensor([1.0, 2.0])}) == "[1, 2] (2 values)"
    assert preview_text({"text": "a" * 300}, max_chars=10) == "a" * 9 + "…"
    assert preview_text({"text": "premise", "text_pair": "hypothesis"}) == "premise || hypothesis"

    grey = thumbnail(image)
    assert grey.shape == (8, 8) and grey.min() == 0.0 and grey.max() == 1.0
    rgb = thumbnail({"x": torch.rand(3, 4, 5)})
    assert rgb.shape == (4, 5, 3)
    assert thumbnail(tabular) is None and thumbnail({"text": "x"}) is None


def test_confusion_counts():
    counts = confusion_counts(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0]), 3)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]


def test_drawings_are_deterministic_pngs_without_stamps():
    rng = np.random.default_rng(0)
    images = [rng.random((8, 8)) for _ in range(10)]
    captions = [f"#{i} pred 1 / true 2\n(0.50)" for i in range(10)]
    frame = pd.DataFrame({"id": [1, 2], "input": ["some text", "more"], "true": ["a", "b"],
                          "pred": ["b", "a"], "confidence": [0.9, 0.6]})
    for draw in (lambda: image_grid(images, captions, "grid", wrong=[True] * 10),
                 lambda: heatmap_image(rng.integers(0, 9, (12, 12)),
                                       [f"class {i}" for i in range(12)], "confusion"),
                 lambda: table_image(frame, "table"),
                 lambda: table_image(frame.iloc[:0], "empty")):
        state = rng.bit_generator.state
        first = draw()
        rng.bit_generator.state = state
        second = draw()
        assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 3
        assert png_bytes(first) == png_bytes(second)
        assert b"Software" not in png_bytes(first) and b"tIME" not in png_bytes(first)
    # 8 columns, and wide enough for the captions
    assert image_grid(images, captions, "t").shape[1] >= 8 * 96


class _TextDataset:
    """A text validation set as the text data kind will give it (no ``ids`` attribute)."""

    def __init__(self, texts):
        self.texts = texts

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, i):
        return {"id": torch.tensor(100 + i), "label": torch.tensor(i % 2), "text": self.texts[i]}


def test_prediction_samples_of_text_inputs(tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    from datamap.callbacks.prediction_samples import PredictionSamples

    texts = [f"review number {i} " + "very long " * 40 for i in range(6)]
    trainer = SimpleNamespace(
        val_dataloaders=SimpleNamespace(dataset=_TextDataset(texts)),
        datamodule=SimpleNamespace(meta={"class_names": ["neg", "pos"]}),
        lightning_module=SimpleNamespace(num_classes=2),
        loggers=[CSVLogger(tmp_path, name="", version="")], global_step=12, current_epoch=3)
    predictions = Predictions(ids=np.arange(100, 106), labels=np.array([0, 1, 0, 1, 0, 1]),
                              preds=np.array([0, 0, 1, 1, 1, 0]),
                              confidence=np.linspace(0.5, 1.0, 6, dtype=np.float32))
    callback = PredictionSamples(max_rows=2, max_chars=30)
    frame, thumbnails = callback.sample_table(trainer, predictions)
    assert frame["id"].tolist() == [101, 102]  # misclassified, lowest ids, capped
    assert frame["true"].tolist() == ["pos", "neg"] and frame["pred"].tolist() == ["neg", "pos"]
    assert frame["input"].iloc[0] == texts[1][:29] + "…"
    assert thumbnails == [None, None]

    callback.log_media(trainer, predictions)
    written = tmp_path / "media" / "val" / "prediction_samples"
    assert pd.read_csv(written / "epoch_003.csv")["id"].tolist() == [101, 102]
    assert (written / "epoch_003.png").read_bytes()[:4] == b"\x89PNG"


def test_markdown_table_escapes_cells():
    frame = pd.DataFrame({"id": [1], "input": ["a|b\nc"]})
    assert markdown_table(frame) == "| id | input |\n|---|---|\n| 1 | a\\|b c |"


def test_summary_values_of_a_cartography_summary():
    summary = {"regions": {"easy_to_learn": 5, "ambiguous": 3, "hard_to_learn": 2},
               "noise": {"scores": {"confidence": {"auroc": 0.91, "average_precision": 0.7}},
                         "hard_to_learn_share": 0.75}}
    assert summary_values(summary) == {
        "cartography/regions/easy_to_learn": 5.0, "cartography/regions/ambiguous": 3.0,
        "cartography/regions/hard_to_learn": 2.0,
        "cartography/label_error_auroc/confidence": 0.91,
        "cartography/hard_to_learn_share_of_flipped": 0.75}
    assert summary_values({"regions": {"ambiguous": 1}}) == {"cartography/regions/ambiguous": 1.0}


def test_missing_logger_package_names_the_extra(monkeypatch):
    import importlib.util

    from datamap.training.fit import instantiate_group

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    conf = {"wandb": {"_target_": "pytorch_lightning.loggers.WandbLogger", "project": "x"}}
    with pytest.raises(ConfigError) as error:
        instantiate_group(conf, "logger")
    assert str(error.value) == ("logger.wandb (pytorch_lightning.loggers.WandbLogger) needs the "
                                "`wandb` extra: pip install -e '.[wandb]'")


def test_early_stopping_is_off_for_the_train_stage_only(caplog):
    from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor
    from pytorch_lightning.loggers import CSVLogger

    from datamap.callbacks.compose import fit_callbacks

    stopping, monitor = EarlyStopping(monitor="val/macro_f1"), LearningRateMonitor()
    logger = CSVLogger("unused")
    with caplog.at_level(logging.INFO):
        assert fit_callbacks([stopping, monitor], [logger], every_epoch=True) == [monitor]
    assert "early stopping is off" in caplog.text
    assert fit_callbacks([stopping, monitor], [logger], every_epoch=False) == [stopping, monitor]
    # a learning-rate monitor needs a logger (Lightning refuses to start without one)
    assert fit_callbacks([stopping, monitor], [], every_epoch=False) == [stopping]


def test_progress_is_a_bar_at_a_terminal_and_lines_elsewhere(monkeypatch):
    import sys

    from pytorch_lightning.callbacks import RichProgressBar

    from datamap.callbacks.progress import EpochLines, progress_bar

    for var in ("DVC_STAGE", "CI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert isinstance(progress_bar("auto"), RichProgressBar)
    monkeypatch.setenv("DVC_STAGE", "train")  # what DVC sets for every stage command
    assert isinstance(progress_bar("auto"), EpochLines)
    monkeypatch.delenv("DVC_STAGE")
    monkeypatch.setenv("CI", "true")
    assert isinstance(progress_bar("auto"), EpochLines)
    assert isinstance(progress_bar("bar"), RichProgressBar)
    assert isinstance(progress_bar("lines"), EpochLines)
    with pytest.raises(ConfigError, match="rich_progress_bar.mode"):
        progress_bar("fancy")


def test_retrains_stop_early_by_default_and_the_train_stage_never(digits_prepared, tmp_path):
    # the default callbacks stop a retrain once validation macro-F1 stops improving; the same
    # configuration in the train stage runs every epoch (cartography needs each one)
    from datamap.training.fit import fit_classifier, fit_seeds

    from .helpers import compose_cfg

    cfg = compose_cfg("trainer.max_epochs=8", "callbacks.early_stopping.patience=1",
                      "callbacks.early_stopping.min_delta=0.5", "model.net.hidden=[16]")
    assert "early_stopping" in cfg.callbacks
    retrained = fit_seeds(cfg, [0], out_dir=tmp_path / "retrain", media=False,
                          prepared_dir=digits_prepared)
    assert retrained[0]["epochs_trained"] == 2  # best at epoch 1, no 0.5 gain by epoch 2
    trained = fit_classifier(cfg, prepared_dir=digits_prepared, out_dir=tmp_path / "train",
                             record_dynamics=True)
    assert trained["epochs_trained"] == 8


def test_a_long_epoch_reports_its_progress_in_plain_lines(caplog):
    # within an epoch, one line every every_seconds: batches done of the total, the rate and
    # the epoch's remaining time (a clock that advances 10 s per batch)
    import logging
    from types import SimpleNamespace

    import torch

    from datamap.callbacks.progress import EpochLines, eta_text, progress_bar

    ticks = iter(range(0, 10_000, 10))
    lines = EpochLines(every_seconds=25, clock=lambda: float(next(ticks)))
    trainer = SimpleNamespace(is_global_zero=True, num_training_batches=100, max_epochs=5,
                              current_epoch=2, callback_metrics={}, logged_metrics={})
    batch = (torch.zeros(32, 4), torch.zeros(32, dtype=torch.long), torch.arange(32))
    with caplog.at_level(logging.INFO, logger="datamap.callbacks.progress"):
        lines.on_train_epoch_start(trainer, None)
        for index in range(6):
            lines.on_train_batch_end(trainer, None, None, batch, index)
    messages = [r.getMessage() for r in caplog.records]
    # started at t=0; batches end at t=10, 20, ..., 60: lines at t=30 (3 done) and t=60 (6)
    assert messages == [
        "epoch 3/5: 3/100 batches (3.0 %), 0.1 batches/s, 3 examples/s, epoch ETA 16 min 10 s",
        "epoch 3/5: 6/100 batches (6.0 %), 0.1 batches/s, 3 examples/s, epoch ETA 15 min 40 s",
    ]
    assert eta_text(42.4) == "42 s" and eta_text(3725) == "1 h 02 min"
    with pytest.raises(ConfigError, match="every_seconds must be a positive number"):
        progress_bar("lines", every_seconds=0)


def test_gathered_predictions_keep_each_id_once():
    """Under DDP every rank holds its share (DistributedSampler pads with a repeat); rank 0 sees
    each validation example once, in id order."""
    from datamap.callbacks.media import ValidationMedia

    rank1 = [torch.tensor([3]), torch.tensor([1, 3, 0]), torch.tensor([11, 13, 10]),
             torch.tensor([1, 3, 0]), torch.tensor([0.5, 0.6, 0.7])]

    class TwoRanks:
        calls = 0

        def all_gather(self, tensor):
            other = rank1[TwoRanks.calls]
            TwoRanks.calls += 1
            padded = tensor.new_zeros(tensor.shape)
            padded[: len(other)] = other
            return torch.stack([tensor, padded])

    callback = ValidationMedia()
    callback._parts = [(torch.tensor([0, 2, 4]), torch.tensor([10, 12, 14]),
                        torch.tensor([0, 0, 4]), torch.tensor([0.9, 0.8, 0.7]))]
    trainer = SimpleNamespace(world_size=2, strategy=TwoRanks())
    gathered = callback._gather(trainer)
    assert gathered.ids.tolist() == [0, 1, 2, 3, 4]
    assert gathered.labels.tolist() == [10, 11, 12, 13, 14]
    assert gathered.wrong.tolist() == [True, True, True, True, True]
    assert gathered.confidence.dtype == np.float32

"""Resuming after a kill at the worst moments: while ``last.ckpt`` is being written, and after
the last epoch's checkpoint but before the outs are in place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from datamap.callbacks import checkpoint as checkpoint_module
from datamap.callbacks.checkpoint import atomic_torch_save
from datamap.errors import DataError
from datamap.training import fit as fit_module
from datamap.training.fit import fit_classifier

from .helpers import compose_cfg

OVERRIDES = ["trainer.max_epochs=2", "model.net.hidden=[16]", "data.datamodule.batch_size=128"]
FILES = ["dynamics.parquet", "model.ckpt", "metrics.json"]


class Crash(pl.Callback):
    """Fails at the start of an epoch's first batch (after the previous epoch's checkpoint)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


def train(prepared, root: Path, **kwargs):
    return fit_classifier(compose_cfg(*OVERRIDES), prepared_dir=prepared, out_dir=root / "train",
                          record_dynamics=True, checkpoint_dir=root / "checkpoints", **kwargs)


@pytest.fixture(scope="module")
def uninterrupted(digits_prepared, tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    train(digits_prepared, root)
    return root / "train"


def test_checkpoint_write_killed_midway_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"epoch": 0}, path)
    before = path.read_bytes()

    def killed(obj, handle):  # half a file, then the process dies
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module.torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"epoch": 1}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left
    monkeypatch.undo()
    atomic_torch_save({"epoch": 1}, path)
    assert torch.load(path, weights_only=True) == {"epoch": 1}


def test_truncated_last_checkpoint_is_refused_in_one_line(digits_prepared, tmp_path):
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(digits_prepared, tmp_path, callbacks=[Crash(epoch=1)])
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # what a cut copy leaves
    with pytest.raises(DataError) as refused:
        train(digits_prepared, tmp_path, resume=True)
    message = str(refused.value)
    assert "\n" not in message
    assert str(last) in message and "resume=false" in message and "delete" in message
    assert last.is_file()  # nothing is thrown away without being asked
    with pytest.raises(DataError, match="resume=false"):  # an explicit path likewise
        train(digits_prepared, tmp_path, resume=str(last))


def test_resume_after_the_last_epochs_checkpoint_gives_the_same_metrics(
        digits_prepared, uninterrupted, tmp_path, monkeypatch):
    def killed(*args, **kwargs):  # every checkpoint is on disk; the outs are not
        raise KeyboardInterrupt

    monkeypatch.setattr(fit_module, "save_model", killed)
    with pytest.raises(KeyboardInterrupt):
        train(digits_prepared, tmp_path)
    monkeypatch.undo()
    assert not (tmp_path / "train").exists()
    assert json.loads((tmp_path / "checkpoints" / "run.json").read_text())["finished"] is False

    metrics = train(digits_prepared, tmp_path, resume=True)  # trains no epoch
    assert metrics["last_epoch"].get("val_loss") is not None
    for name in FILES:
        assert (tmp_path / "train" / name).read_bytes() == (uninterrupted / name).read_bytes(), \
            name

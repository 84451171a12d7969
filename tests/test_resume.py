"""Resuming the train stage: an interrupted run continued from its last checkpoint gives the same
bytes as an uninterrupted one; runs that must not be mixed are not."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from datamap.data.datamodule import PreparedDataModule
from datamap.dynamics import DynamicsRecorder
from datamap.errors import ConfigError
from datamap.models import MLP, Classifier
from datamap.training.fit import fit_classifier

from .helpers import compose_cfg

# dropout makes the run depend on the global RNG stream, which Lightning does not restore
OVERRIDES = ["trainer.max_epochs=4", "model.net.dropout=0.3", "model.net.hidden=[32]",
             "data.datamodule.batch_size=64", "dynamics.splits=[train,val]"]
FILES = ["dynamics.parquet", "heldout/dynamics_val.parquet", "model.ckpt", "metrics.json"]


class Crash(pl.Callback):
    """Fails in the middle of an epoch, after the checkpoint of the previous one."""

    def __init__(self, epoch: int = 2, batch: int = 5):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise RuntimeError("simulated crash")


def train(cfg, prepared, out, ckpt, **kwargs):
    return fit_classifier(cfg, prepared_dir=prepared, out_dir=out, record_dynamics=True,
                          checkpoint_dir=ckpt, **kwargs)


@pytest.fixture(scope="module")
def uninterrupted(digits_prepared, tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    train(compose_cfg(*OVERRIDES), digits_prepared, root / "train", root / "checkpoints")
    return root / "train"


def test_resume_after_crash_is_byte_identical(digits_prepared, uninterrupted, tmp_path):
    cfg = compose_cfg(*OVERRIDES)
    out, ckpt = tmp_path / "train", tmp_path / "checkpoints"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, digits_prepared, out, ckpt, callbacks=[Crash(epoch=2)])
    assert not out.exists()  # a failed run leaves no out ...
    assert (ckpt / "last.ckpt").is_file()  # ... but its checkpoints and completed epochs
    assert sorted(p.name for p in (ckpt / "dynamics" / "train").iterdir()) == [
        "epoch_00000.arrow", "epoch_00001.arrow"]  # the partial epoch 2 is not there
    assert json.loads((ckpt / "run.json").read_text())["finished"] is False

    # as DVC checks out a cached persistent out with cache.type hardlink/symlink: links into
    # its cache, which the resumed run must not write through (all writes replace files)
    cache = tmp_path / "dvc-cache"
    cache.mkdir()
    for i, path in enumerate(p for p in sorted(ckpt.rglob("*")) if p.is_file()):
        (cache / str(i)).write_bytes(path.read_bytes())
        (cache / str(i)).chmod(0o444)
        path.unlink()
        os.link(cache / str(i), path)
    cached = {p: p.read_bytes() for p in cache.iterdir()}

    train(cfg, digits_prepared, out, ckpt, resume=True)
    assert {p: p.read_bytes() for p in cache.iterdir()} == cached  # the cache is untouched
    for name in FILES:
        assert (out / name).read_bytes() == (uninterrupted / name).read_bytes(), name
    assert json.loads((ckpt / "run.json").read_text())["finished"] is True


def test_resume_from_explicit_checkpoint(digits_prepared, uninterrupted, tmp_path):
    cfg = compose_cfg(*OVERRIDES)
    out, ckpt = tmp_path / "train", tmp_path / "checkpoints"
    with pytest.raises(RuntimeError):
        train(cfg, digits_prepared, out, ckpt, callbacks=[Crash(epoch=3, batch=0)])
    # last.ckpt is epoch 2's: keep it elsewhere, with the dynamics parts that belong to it
    elsewhere = tmp_path / "kept"
    elsewhere.mkdir()
    (elsewhere / "at_epoch_2.ckpt").write_bytes((ckpt / "last.ckpt").read_bytes())
    shutil.copytree(ckpt / "dynamics", elsewhere / "dynamics")
    shutil.rmtree(ckpt)
    train(cfg, digits_prepared, out, ckpt, resume=str(elsewhere / "at_epoch_2.ckpt"))
    for name in FILES:
        assert (out / name).read_bytes() == (uninterrupted / name).read_bytes(), name


def test_resume_true_trains_afresh_when_it_cannot_resume(digits_prepared, uninterrupted,
                                                         tmp_path):
    out, ckpt = tmp_path / "train", tmp_path / "checkpoints"
    ckpt.mkdir()
    (ckpt / "stale.ckpt").write_text("from an earlier run")
    # nothing to resume: trains from scratch, clearing the directory first
    train(compose_cfg(*OVERRIDES), digits_prepared, out, ckpt, resume=True)
    assert not (ckpt / "stale.ckpt").exists()
    for name in FILES:
        assert (out / name).read_bytes() == (uninterrupted / name).read_bytes(), name
    # a finished run is not resumed either (that would skip training and lose the metrics)
    train(compose_cfg(*OVERRIDES), digits_prepared, out, ckpt, resume=True)
    assert json.loads((out / "metrics.json").read_text())["epochs_trained"] == 4
    # an interrupted run of a different configuration is not resumed
    with pytest.raises(RuntimeError):
        train(compose_cfg(*OVERRIDES), digits_prepared, out, ckpt, callbacks=[Crash(epoch=1)])
    changed = compose_cfg(*OVERRIDES, "model.optimizer.lr=0.01")
    train(changed, digits_prepared, out, ckpt, resume=True)
    assert (out / "model.ckpt").read_bytes() != (uninterrupted / "model.ckpt").read_bytes()
    frame = pq.read_table(out / "dynamics.parquet")
    assert sorted(set(frame.column("epoch").to_pylist())) == [0, 1, 2, 3]


def test_checkpoints_do_not_depend_on_where_the_repository_is(digits_prepared, uninterrupted,
                                                              tmp_path, monkeypatch):
    """The train stage's checkpoint directory is a DVC out: two clones at different paths must
    write the same bytes, and a directory restored in another clone must resume there."""
    cfg = compose_cfg(*OVERRIDES)
    for clone in ("a", "b/deeper"):
        (tmp_path / clone).mkdir(parents=True)
        monkeypatch.chdir(tmp_path / clone)
        train(cfg, digits_prepared, Path("train"), Path("checkpoints"))
    a, b = tmp_path / "a" / "checkpoints", tmp_path / "b" / "deeper" / "checkpoints"
    names = sorted(p.name for p in a.iterdir())
    assert "last.ckpt" in names and sorted(p.name for p in b.iterdir()) == names
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    state = torch.load(a / "last.ckpt", weights_only=True)["callbacks"]
    saved = next(v for k, v in state.items() if k.startswith("ResumableCheckpoint"))
    assert saved["dirpath"] == "checkpoints"
    assert saved["last_model_path"] == "checkpoints/last.ckpt"
    assert all(path.startswith("checkpoints/epoch_") for path in saved["best_k_models"])

    # crash in one clone, move the checkout, resume in the new place
    (tmp_path / "c").mkdir()
    monkeypatch.chdir(tmp_path / "c")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, digits_prepared, Path("train"), Path("checkpoints"), callbacks=[Crash()])
    monkeypatch.chdir(tmp_path)
    shutil.move(tmp_path / "c", tmp_path / "moved")
    monkeypatch.chdir(tmp_path / "moved")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="The dirpath has changed")
        train(cfg, digits_prepared, Path("train"), Path("checkpoints"), resume=True)
    for name in FILES:
        assert (Path("train") / name).read_bytes() == (uninterrupted / name).read_bytes(), name


def test_explicit_resume_refuses_missing_or_foreign_checkpoints(digits_prepared, tmp_path):
    cfg = compose_cfg(*OVERRIDES)
    out, ckpt = tmp_path / "train", tmp_path / "checkpoints"
    with pytest.raises(ConfigError, match="not found"):
        train(cfg, digits_prepared, out, ckpt, resume=str(tmp_path / "nope.ckpt"))
    with pytest.raises(RuntimeError):
        train(cfg, digits_prepared, out, ckpt, callbacks=[Crash(epoch=1)])
    changed = compose_cfg(*OVERRIDES, "seed=1")
    with pytest.raises(ConfigError, match="different configuration"):
        train(changed, digits_prepared, out, ckpt, resume=str(ckpt / "last.ckpt"))
    with pytest.raises(ConfigError, match="persistent checkpoint"):
        fit_classifier(cfg, prepared_dir=digits_prepared, out_dir=out, resume=True)


# ------------------------------------------------------------------------------------------------
# the callback alone: without part files its completed epochs travel inside the checkpoint


def _fit(prepared, tmp_path, recorder, ckpt_path=None, crash=None):
    pl.seed_everything(0, workers=True, verbose=False)
    model = Classifier(net=partial(MLP, hidden=[16], dropout=0.2),
                       optimizer=partial(torch.optim.AdamW, lr=3e-3),
                       input_shape=(1, 8, 8), num_classes=10)
    callbacks = [recorder, ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)]
    trainer = pl.Trainer(accelerator="cpu", max_epochs=3, logger=False, deterministic=True,
                         enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, callbacks=callbacks + ([crash] if crash else []))
    trainer.fit(model, datamodule=PreparedDataModule(prepared, batch_size=64),
                ckpt_path=ckpt_path, weights_only=True)


def test_recorder_state_inside_checkpoint(digits_prepared, tmp_path):
    full = DynamicsRecorder(store_logits=True)
    _fit(digits_prepared, tmp_path / "a", full)
    with pytest.raises(RuntimeError):
        _fit(digits_prepared, tmp_path / "b", DynamicsRecorder(store_logits=True),
             crash=Crash(epoch=2, batch=3))
    state = torch.load(tmp_path / "b" / "ckpt" / "last.ckpt", weights_only=True)["callbacks"]
    (recorder_state,) = [v for k, v in state.items() if k.startswith("DynamicsRecorder")]
    assert recorder_state["epochs"] == {"train": 2} and len(recorder_state["arrays"]["train"]) == 2

    last = tmp_path / "b" / "ckpt" / "last.ckpt"
    # resuming with a different recording config is refused, not mixed
    with pytest.raises(ConfigError, match="recorded with"):
        _fit(digits_prepared, tmp_path / "b", DynamicsRecorder(store_logits=False),
             ckpt_path=last)

    resumed = DynamicsRecorder(store_logits=True)
    _fit(digits_prepared, tmp_path / "b", resumed, ckpt_path=last)
    a, b = full.table(), resumed.table()
    assert a.equals(b)
    assert np.array_equal(a.column("epoch").to_numpy(), np.repeat([0, 1, 2], a.num_rows // 3))

    # a checkpoint of the finished run: nothing left to train, the dynamics are all there
    done = DynamicsRecorder(store_logits=True)
    _fit(digits_prepared, tmp_path / "b", done, ckpt_path=last)
    assert done.table().equals(a)


def test_last_checkpoint_follows_the_latest_epoch_not_the_best(digits_prepared, tmp_path):
    """ModelCheckpoint alone writes last.ckpt only with a new best: a kill after the best epoch
    would resume from the best epoch and redo the rest. last.ckpt must be the latest epoch's."""
    # the lowest macro-F1 is the first epoch's: the "best" checkpoint never moves after it
    cfg = compose_cfg(*OVERRIDES, "callbacks.model_checkpoint.mode=min")
    out, ckpt = tmp_path / "train", tmp_path / "checkpoints"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, digits_prepared, out, ckpt, callbacks=[Crash(epoch=3, batch=0)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        last = torch.load(ckpt / "last.ckpt", weights_only=True)
    assert sorted(p.name for p in ckpt.glob("epoch_*.ckpt")) == ["epoch_000.ckpt"]
    assert last["epoch"] == 2  # epochs 0, 1, 2 completed: 3 is redone, nothing more
    train(cfg, digits_prepared, out, ckpt, resume=True)
    reference = tmp_path / "reference"
    train(cfg, digits_prepared, reference / "train", reference / "checkpoints")
    for name in FILES:
        assert (out / name).read_bytes() == (reference / "train" / name).read_bytes(), name


def test_last_every_n_epochs_must_be_positive():
    from datamap.callbacks.checkpoint import ResumableCheckpoint

    with pytest.raises(ConfigError, match="last_every_n_epochs"):
        ResumableCheckpoint(last_every_n_epochs=0)


# ------------------------------------------------------------------------------------------------
# the real train stage, killed with SIGKILL


def _stage(cwd, *overrides, pythonpath_first: Path | None = None):
    """``python -m stages.train`` as dvc.yaml runs it, in ``cwd`` (not waited for)."""
    import subprocess
    import sys

    from .helpers import ROOT, subprocess_env

    path = os.pathsep.join(str(p) for p in (pythonpath_first, ROOT) if p is not None)
    env = subprocess_env(PYTHONPATH=path, PYTHONWARNINGS="ignore::FutureWarning")
    return subprocess.Popen(
        [sys.executable, "-m", "stages.train", "hydra.run.dir=.", "hydra.output_subdir=null",
         "hydra/job_logging=stdout", "hydra/hydra_logging=none", *STAGE_OVERRIDES, *overrides],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


STAGE_OVERRIDES = ["trainer.max_epochs=6", "model.net.dropout=0.3", "model.net.hidden=[32]",
                   "data.datamodule.batch_size=64", "data.corrections=null"]


def _outs(cwd: Path) -> dict[str, bytes]:
    """Every file of the train stage's outs, by path relative to ``cwd``, as DVC sees them:
    without the temporaries a killed atomic write leaves (``.dvcignore``: ``.*.tmp``)."""
    files = {}
    for out in ("data/train", "data/curves"):
        for path in sorted((cwd / out).rglob("*")):
            temporary = any(p.startswith(".") and (p.endswith(".tmp") or ".staging-" in p)
                            for p in path.relative_to(cwd).parts)
            if path.is_file() and not temporary:
                files[str(path.relative_to(cwd))] = path.read_bytes()
    return files


@pytest.fixture(scope="module")
def uninterrupted_stage(digits_prepared, tmp_path_factory):
    """The train stage's outs of a run nobody killed."""
    cwd = tmp_path_factory.mktemp("stage") / "uninterrupted"
    shutil.copytree(digits_prepared, cwd / "data" / "prepared")
    done = _stage(cwd)
    assert done.wait(timeout=600) == 0, done.stdout.read()
    return _outs(cwd)


#: Moments a test kills the train stage at, exactly: hooks of ModelCheckpoint patched from
#: outside the run (a sitecustomize on PYTHONPATH), so that its configuration -- and so whether
#: it may be resumed -- is the uninterrupted run's.
KILL_POINTS = {
    # epoch 2's checkpoints are taken, its training-epoch log rows not yet logged
    "after_the_checkpoint": ("on_train_epoch_end", "trainer.current_epoch == 2"),
    # in the middle of epoch 3's batches
    "mid_epoch": ("on_train_batch_end", "trainer.current_epoch == 3 and args[-1] == 3"),
}

_KILLER = """
import os, signal
from pytorch_lightning.callbacks import ModelCheckpoint

_original = ModelCheckpoint.{hook}

def _kill_at_the_moment(self, trainer, *args):
    _original(self, trainer, *args)
    if {condition}:
        os.kill(os.getpid(), signal.SIGKILL)

ModelCheckpoint.{hook} = _kill_at_the_moment
"""


def _resume_and_compare(killed: Path, expected: dict[str, bytes]) -> None:
    assert not (killed / "data/train/model.ckpt").exists()
    resumed = _stage(killed, "resume=true")
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output
    assert "resuming from" in output
    got = _outs(killed)
    # logs/ too: the resumed run continues the killed run's logs (kept next to the
    # checkpoints), with the rows of the epochs it redoes logged once
    assert any(name.endswith("logs/csv/metrics.csv") for name in expected)
    assert sorted(got) == sorted(expected)
    assert [name for name in expected if got[name] != expected[name]] == []


@pytest.mark.slow
@pytest.mark.parametrize("moment", sorted(KILL_POINTS))
def test_sigkill_at_a_given_moment_then_resume_gives_every_out_byte_equal(
        digits_prepared, uninterrupted_stage, tmp_path, moment):
    import signal

    killed = tmp_path / "killed"
    shutil.copytree(digits_prepared, killed / "data" / "prepared")
    hook, condition = KILL_POINTS[moment]
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(_KILLER.format(hook=hook, condition=condition))
    process = _stage(killed, pythonpath_first=inject)
    output = process.communicate(timeout=600)[0]
    assert process.returncode == -signal.SIGKILL, output
    _resume_and_compare(killed, uninterrupted_stage)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_every_out_byte_equal(digits_prepared,
                                                                 uninterrupted_stage, tmp_path):
    import signal
    import time

    killed = tmp_path / "killed"
    shutil.copytree(digits_prepared, killed / "data" / "prepared")
    process = _stage(killed)
    # kill -9 once epoch 2's dynamics are stored: wherever in epoch 3 (or its checkpoint) that is
    part = killed / "data/train/checkpoints/dynamics/train/epoch_00002.arrow"
    deadline = time.monotonic() + 600
    while not part.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    _resume_and_compare(killed, uninterrupted_stage)


def test_save_last_link_is_refused():
    from datamap.callbacks.checkpoint import ResumableCheckpoint

    with pytest.raises(ConfigError, match="save_last must be true or false"):
        ResumableCheckpoint(save_last="link")

"""The train stage's persistent checkpoint directory: which configuration wrote it, whether its run
finished, and which checkpoint a resumed run continues from."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from datamap.errors import ConfigError, DataError
from datamap.io import write_json

log = logging.getLogger(__name__)


#: In a persistent checkpoint directory: which configuration wrote it and whether it finished.
RUN_FILE = "run.json"


def run_fingerprint(cfg: DictConfig, prepared_dir: str | os.PathLike,
                    train_ids: np.ndarray | None) -> str:
    """A hash of everything that determines the training run, for deciding whether a checkpoint
    may be resumed: seed, datamodule, model, trainer, dynamics, callbacks, the prepared data's
    ``meta.json`` and the training subset. A resumed run must give what an uninterrupted run of
    the same configuration gives, so any change means training afresh."""
    conf = {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(
        cfg.get(key)) else cfg.get(key)
        for key in ("seed", "model", "trainer", "dynamics", "callbacks")}
    conf["datamodule"] = OmegaConf.to_container(cfg.data.datamodule, resolve=True)
    digest = hashlib.sha256(json.dumps(conf, sort_keys=True, default=str).encode())
    meta = Path(prepared_dir) / "meta.json"
    if meta.is_file():
        digest.update(meta.read_bytes())
    if train_ids is not None:
        digest.update(np.ascontiguousarray(np.sort(np.asarray(train_ids, np.int64))).tobytes())
    return digest.hexdigest()


def _read_run(checkpoint_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((checkpoint_dir / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def resume_checkpoint(checkpoint_dir: Path, resume: bool | str | None,
                      fingerprint: str) -> str | None:
    """The checkpoint to resume from, or None to train afresh.

    ``resume`` False/None: afresh. True: ``checkpoint_dir/last.ckpt`` when it belongs to an
    unfinished run of the same configuration, else afresh (logged). A path: that checkpoint,
    which must exist and, when its directory says which configuration wrote it, match this one.
    """
    if resume is None or resume is False:
        return None
    if resume is True:
        last = checkpoint_dir / "last.ckpt"
        run = _read_run(checkpoint_dir)
        if not last.is_file():
            log.info("resume: no %s yet; training from scratch", last)
            return None
        if run.get("fingerprint") != fingerprint:
            log.warning("resume: %s was written by a different configuration (or its %s is "
                        "missing); training from scratch", last, RUN_FILE)
            return None
        if run.get("finished"):
            log.info("resume: the run in %s finished; training from scratch", checkpoint_dir)
            return None
        _check_readable(last, "delete it (or the whole directory) to train afresh, or set "
                              "resume=false")
        return str(last)
    path = Path(str(resume))
    if not path.is_file():
        raise ConfigError(f"resume={resume!r}: checkpoint not found; pass the path of a .ckpt "
                          "file, true (the last checkpoint of the train stage) or false")
    run = _read_run(path.parent)
    if run and run.get("fingerprint") != fingerprint:
        raise ConfigError(f"resume={resume!r}: the checkpoint was written with a different "
                          "configuration (see its run.json); resuming it would mix two runs")
    _check_readable(path, "pass another checkpoint, or resume=false to train afresh")
    return str(path)


def _check_readable(path: Path, fix: str) -> None:
    """Refuse in one line a resume checkpoint that cannot be read (a file cut short by a crash
    of an older writer, a disk fault): the run cannot continue from it, and training afresh
    silently would throw away what the directory holds."""
    from datamap.models.checkpoint import read_checkpoint

    try:
        read_checkpoint(path)
    except DataError as exc:
        raise DataError(f"resume: {exc}; {fix}") from exc


def _drop_checkpoints_after(checkpoint_dir: Path, ckpt_path: str) -> None:
    """Remove the checkpoint files the resume checkpoint does not know of: a run killed after
    saving a new best ``epoch_NNN.ckpt`` but before ``last.ckpt`` leaves a file that the
    resumed run's checkpoint callback never tracks (so never replaces), and the outs would
    differ from an uninterrupted run's."""
    from datamap.models.checkpoint import read_checkpoint

    state = read_checkpoint(ckpt_path)
    known = {Path(ckpt_path).name}
    for callback_state in (state.get("callbacks") or {}).values():
        if not isinstance(callback_state, dict):
            continue
        for key in ("best_model_path", "last_model_path", "kth_best_model_path"):
            if callback_state.get(key):
                known.add(Path(str(callback_state[key])).name)
        known.update(Path(str(p)).name for p in (callback_state.get("best_k_models") or {}))
    for path in checkpoint_dir.glob("*.ckpt"):
        if path.name not in known:
            path.unlink()
    for path in checkpoint_dir.glob(".*.ckpt.*.tmp"):
        path.unlink(missing_ok=True)  # a checkpoint being written when the run was killed


def prepare_checkpoint_dir(checkpoint_dir: Path, ckpt_path: str | None,
                            fingerprint: str) -> None:
    """Rank 0: clear the directory unless resuming from a checkpoint inside it; mark the run."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) != 0:
        return  # DDP ranks > 0 start inside trainer.fit, after rank 0 has done this
    inside = ckpt_path is not None and checkpoint_dir.resolve() in Path(ckpt_path).resolve().parents
    if not inside and checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)  # a fresh run must not see an earlier run's files
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    if inside:
        _drop_checkpoints_after(checkpoint_dir, ckpt_path)
    parts = Path(ckpt_path).parent / "dynamics" if ckpt_path is not None else None
    if not inside and parts is not None and parts.is_dir():
        # resuming a checkpoint kept elsewhere: its completed epochs' dynamics come along
        shutil.copytree(parts, checkpoint_dir / "dynamics")
    write_json(checkpoint_dir / RUN_FILE, {"fingerprint": fingerprint, "finished": False})


# --------------------------------------------------------------------------------------------
# the logs of a resumed run

#: Under a persistent checkpoint directory: the run's ``logs/`` while it trains, so that a
#: killed run's media and logged rows are there for the run that resumes it.
LOGS_DIR = "logs"


def _csv_loggers(loggers: list[Any]) -> list[Any]:
    from pytorch_lightning.loggers import CSVLogger

    return [logger for logger in loggers if isinstance(logger, CSVLogger)]


def restore_logged_rows(loggers: list[Any], ckpt_path: str | os.PathLike) -> int:
    """Give each CSV logger of a resumed run the rows the interrupted run logged up to the
    checkpoint's epoch, so that its ``metrics.csv`` ends up what an uninterrupted run writes
    (Lightning's CSV logger deletes the file it finds when it starts). Rows of later epochs --
    redone by the resumed run -- are dropped. Call before the loggers write anything; returns
    the number of rows restored."""
    import csv

    from datamap.models.checkpoint import read_checkpoint

    state = read_checkpoint(ckpt_path)
    epoch, step = int(state["epoch"]), int(state["global_step"])

    def logged_before_resume(row: dict[str, str]) -> bool:
        # a row of an epoch (validation, epoch-end) by its epoch; one logged by step alone
        # (the learning-rate monitor's) by its step: the resumed run starts at ``step``
        if row.get("epoch"):
            return int(float(row["epoch"])) <= epoch
        return bool(row.get("step")) and int(float(row["step"])) < step

    restored = 0
    for logger in _csv_loggers(loggers):
        path = Path(logger.log_dir) / "metrics.csv"
        if not path.is_file():
            continue
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.DictReader(handle) if logged_before_resume(row)]
        writer = logger.experiment  # created now: it removes the old file
        writer.metrics[:0] = rows
        restored += len(rows)
    return restored


def flush_logs_callback() -> Any:
    """A callback that writes every logger's pending rows at the start of each epoch, so that a
    run killed in epoch e+1 has epoch e's rows on disk for the run that resumes it (the CSV
    logger otherwise keeps up to 100 steps in memory)."""
    import pytorch_lightning as pl

    class FlushLogs(pl.Callback):
        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            for logger in trainer.loggers:
                logger.save()

    return FlushLogs()

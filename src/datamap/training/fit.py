"""Fit a classifier from config: the train and retrain stages are both this, with different data.

Reads as the lightning-hydra-template entry point does: seed, instantiate datamodule, model,
callbacks, loggers, trainer, fit. Everything the run writes goes to a staging directory that is
moved into place only when fit succeeds, so a failed run leaves no artifact behind -- except the
Lightning checkpoints when the caller names a persistent ``checkpoint_dir`` (the train stage's
``data/train/checkpoints``), which is what makes ``resume`` possible after a crash.
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from datamap.errors import ConfigError
from datamap.io import move_into, write_json
from datamap.models.checkpoint import checkpoint_epoch, load_model, save_model
from datamap.models.factories import targets_of
from datamap.training.checkpoints import (
    LOGS_DIR,
    RUN_FILE,
    flush_logs_callback,
    prepare_checkpoint_dir,
    restore_logged_rows,
    resume_checkpoint,
    run_fingerprint,
)

log = logging.getLogger(__name__)


def _accepts(target: str, name: str) -> bool:
    from hydra.utils import get_object

    obj = get_object(target)  # a class or a factory function
    try:
        return name in inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False


def instantiate_group(
    group: Mapping[str, Any] | None, key: str, **paths: str
) -> list[Any]:
    """Instantiate every ``_target_`` entry of a config group (callbacks, loggers).

    ``paths`` are directory arguments (``dirpath``, ``save_dir``, ``dir``) the run decides; each
    is passed to the targets whose config sets it to null, or leaves it out while the target's
    signature takes it, so configs stay free of run-specific paths (and of ``${hydra:...}``
    interpolations). ``{name}`` in a path is replaced by the entry's name (``logs/{name}``: one
    directory per logger). An entry whose optional package is missing is refused in one line
    naming the extra to install.
    """
    from hydra.utils import instantiate

    from datamap.tracking.loggers import missing_extra

    objects = []
    for name, conf in (group or {}).items():
        if conf is None:
            continue
        if not isinstance(conf, Mapping) or "_target_" not in conf:
            raise ConfigError(f"{key}.{name} needs a _target_ (a class to instantiate)")
        extra = missing_extra(str(conf["_target_"]))
        if extra:
            raise ConfigError(f"{key}.{name} ({conf['_target_']}) needs the `{extra}` extra: "
                              f"pip install -e '.[{extra}]'")
        run_paths = {arg: value.replace("{name}", str(name)) for arg, value in paths.items()
                     if (conf[arg] is None if arg in conf else _accepts(conf["_target_"], arg))}
        objects.append(instantiate(conf, **run_paths))
    return objects


def build_loggers(group: Mapping[str, Any] | None, log_dir: Path) -> list[Any]:
    """The ``logger`` group's loggers, each writing under ``log_dir/<its name>`` (so several at
    once never share files), with MLflow's local file store allowed."""
    from datamap.tracking.loggers import prepare_logger_configs

    return instantiate_group(prepare_logger_configs(group), "logger",
                             save_dir=str(log_dir / "{name}"), dir=str(log_dir / "{name}"))


#: Where the train stage's recorder writes held-out splits' dynamics (``dynamics.splits``):
#: a directory that always exists, so DVC can declare it as an out whatever is recorded.
HELDOUT_DIR = "heldout"
def saved_model_metrics(model_path: Path, datamodule: Any, trainer: Any,
                        monitor: str | None,
                        restored: Mapping[str, float] | None = None,
                        trusted: Sequence[str] = ()) -> dict[str, Any]:
    """What ``metrics.json`` says: the numbers of the model saved in ``model_path``.

    The saved weights are reloaded and evaluated afresh on the validation split with the code
    the evaluate stage uses, so each number describes the file next to it -- not the last epoch,
    which is usually another set of weights. The last epoch's logged values are kept under
    ``last_epoch``, a name that says what they are. ``trusted``: the model config's targets
    (see ``datamap.models.checkpoint.load_model``).

    ``restored``: the logged values kept in the checkpoint a resumed run started from, under
    what this run logged: a run resumed from its final epoch's checkpoint trains (and logs)
    nothing, and its ``last_epoch`` is still the uninterrupted run's.
    """
    from datamap.training.metrics import split_metrics

    values = {key: float(value) for key, value in (restored or {}).items()}
    values.update((key, float(value)) for key, value in trainer.callback_metrics.items())
    last = {key.replace("/", "_"): round(value, 6) for key, value in sorted(values.items())
            if not key.endswith("_step")}
    return {
        "checkpoint": {
            "epoch": checkpoint_epoch(model_path),
            "selected_by": f"best {monitor}" if monitor else "last epoch",
        },
        "val": split_metrics(load_model(model_path, trusted), datamodule.prepared_dir, "val"),
        "train_examples": len(datamodule.split("train")),
        "epochs_trained": int(trainer.current_epoch),
        "last_epoch": {"epoch": int(trainer.current_epoch) - 1, **last},
    }


def check_max_epochs(trainer: Mapping[str, Any]) -> None:
    """Refuse a run that would not end: Lightning reads ``max_epochs: -1`` as "train forever"
    and an unset one (with no ``max_steps``) as 1000 epochs."""
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
    if steps not in (None, -1):
        return  # bounded by steps
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"trainer.max_epochs must be a positive number of epochs, got "
                          f"{epochs!r} (-1 or unset would train forever or for Lightning's "
                          "default 1000 epochs); set e.g. trainer.max_epochs=20")


def build_trainer(trainer: Mapping[str, Any], **kwargs: Any) -> Any:
    """Instantiate the ``trainer`` config, refusing in one line a hardware setting this machine
    cannot meet (``trainer=gpu`` without a GPU, more devices than it has)."""
    from hydra.utils import instantiate
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    try:
        return instantiate(trainer, **kwargs)
    except Exception as exc:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, MisconfigurationException):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        reason = " ".join(str(cause).split())
        raise ConfigError(
            f"trainer (accelerator={trainer.get('accelerator')!r}, "
            f"devices={trainer.get('devices')!r}): {reason} -- pick a trainer this machine can "
            "run, e.g. trainer=default (accelerator: auto uses a GPU only when there is one)"
        ) from exc


def fit_classifier(
    cfg: DictConfig,
    *,
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    train_ids: np.ndarray | None = None,
    record_dynamics: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool | str | None = False,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Train one model; write ``model.ckpt``, ``metrics.json``, ``logs/`` (and the dynamics
    files when ``record_dynamics``) into ``out_dir``. Returns the metrics.

    Args:
        checkpoint_dir: where Lightning checkpoints and the recorder's per-epoch dynamics parts
            go. None: a temporary directory, discarded after the run (no resume). A persistent
            directory survives a failed run; it is cleared when a run starts afresh, so fresh runs
            never see an earlier run's files.
        resume: False: train afresh. True: continue from ``checkpoint_dir/last.ckpt`` if an
            unfinished run of the same configuration left it (else afresh). A path: continue
            from that checkpoint. Completed epochs' dynamics are kept; a partial one is redone.
        callbacks: extra Lightning callbacks, appended to the configured ones.
    """
    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from pytorch_lightning.callbacks import ModelCheckpoint

    from datamap.callbacks.compose import fit_callbacks, shows_progress
    from datamap.callbacks.portable import PortableCheckpointPaths
    from datamap.data.options import seed_value
    from datamap.tracking.loggers import RUNS_FILE, finish_runs, write_runs

    check_max_epochs(cfg.trainer)
    seed = seed_value(cfg.seed)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # A sibling, not a child: a failed run must not leave even an empty out_dir behind.
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
    try:
        # Data and model first: a model that cannot read the data fails before anything
        # (even the persistent checkpoint directory) is touched.
        pl.seed_everything(seed, workers=True, verbose=False)
        log.info("datamodule: %s", cfg.data.datamodule._target_)
        datamodule = instantiate(cfg.data.datamodule, prepared_dir=str(prepared_dir),
                                 seed=seed, train_ids=train_ids)
        log.info("model: %s", cfg.model._target_)
        model = instantiate(cfg.model, input_shape=list(datamodule.input_shape),
                            num_classes=datamodule.num_classes,
                            input_kind=datamodule.input_kind,
                            class_names=list(datamodule.meta["class_names"]))
        ckpt_path = None
        fingerprint = ""
        if checkpoint_dir is None:
            if resume not in (None, False):
                raise ConfigError("resume needs a persistent checkpoint directory")
            checkpoint_dir = staging / "checkpoints"
        else:
            checkpoint_dir = Path(checkpoint_dir)
            fingerprint = run_fingerprint(cfg, prepared_dir, train_ids)
        recorder = None
        if record_dynamics:
            # Completed epochs go to part files next to the checkpoints, so a resumed run finds
            # them (the checkpoints themselves stay small); a throwaway run keeps them in memory.
            # Built before the checkpoint directory is touched: its settings are checked here.
            parts = str(checkpoint_dir / "dynamics") if fingerprint else None
            (staging / HELDOUT_DIR).mkdir()
            recorder = instantiate(cfg.dynamics, dirpath=str(staging),
                                   heldout_dirpath=str(staging / HELDOUT_DIR),
                                   seed=seed, parts_dir=parts,
                                   run_token=fingerprint[:32] or None)
        configured = instantiate_group(cfg.get("callbacks"), "callbacks",
                                       dirpath=str(checkpoint_dir))
        if fingerprint:
            ckpt_path = resume_checkpoint(checkpoint_dir, resume, fingerprint)
            prepare_checkpoint_dir(checkpoint_dir, ckpt_path, fingerprint)
        # a persistent run logs next to its checkpoints, so a resumed run continues its logs
        logs_dir = checkpoint_dir / LOGS_DIR if fingerprint else staging / "logs"
        loggers = build_loggers(cfg.get("logger"), logs_dir)
        if ckpt_path is not None and logs_dir.is_dir():
            log.info("restored %d logged rows of the interrupted run",
                     restore_logged_rows(loggers, ckpt_path))
        all_callbacks = fit_callbacks(configured, loggers, every_epoch=record_dynamics)
        if recorder is not None:
            all_callbacks.append(recorder)
        if fingerprint:
            all_callbacks.append(flush_logs_callback())
        # checkpoints store paths relative to the repository: the same bytes in every clone
        all_callbacks.append(PortableCheckpointPaths())
        all_callbacks.extend(callbacks)
        trainer: pl.Trainer = build_trainer(cfg.trainer, callbacks=all_callbacks,
                                            logger=loggers or False,
                                            enable_progress_bar=shows_progress(all_callbacks),
                                            default_root_dir=str(staging))
        for logger in loggers:
            # the run's configuration; `resume` is how it was started, not what it is
            logger.log_hyperparams({key: value for key, value in
                                    OmegaConf.to_container(cfg, resolve=True).items()
                                    if key != "resume"})
        log.info("fit: %d training examples, %s%s", len(datamodule.split("train")),
                 f"up to {trainer.max_epochs} epochs",
                 f", resuming from {ckpt_path}" if ckpt_path else "")
        with warnings.catch_warnings():
            # run.json (and, when resuming, the earlier checkpoints) are meant to be there
            warnings.filterwarnings("ignore", message="Checkpoint directory .* not empty")
            # weights_only: a checkpoint holds tensors and plain values; reading one runs no code
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)

        checkpoint = next((c for c in all_callbacks if isinstance(c, ModelCheckpoint)), None)
        best = checkpoint.best_model_path if checkpoint is not None else ""
        metrics: dict[str, Any] = {}
        if trainer.is_global_zero:
            save_model(model, staging / "model.ckpt", best_checkpoint=best or None)
            restored = getattr(checkpoint, "restored_metrics", None) if ckpt_path else None
            metrics = saved_model_metrics(staging / "model.ckpt", datamodule, trainer,
                                          checkpoint.monitor if best else None, restored,
                                          sorted(targets_of(cfg.model)))
        if trainer.is_global_zero:
            write_json(staging / "metrics.json", metrics)
            write_runs(loggers, logs_dir / RUNS_FILE)
            finish_runs(loggers)
            if logs_dir != staging / "logs":
                os.replace(logs_dir, staging / "logs")
            # a directory is replaced whole: no file of an earlier run survives in it
            move_into(staging, out_dir, ["model.ckpt", "metrics.json", "logs",
                                          "dynamics.parquet", HELDOUT_DIR])
            if fingerprint:
                write_json(checkpoint_dir / RUN_FILE, {"fingerprint": fingerprint,
                                                       "finished": True})
                # the parts are in dynamics*.parquet now; a finished run is never resumed
                shutil.rmtree(checkpoint_dir / "dynamics", ignore_errors=True)
        return metrics
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fit_seeds(
    cfg: DictConfig,
    seeds: Sequence[int],
    *,
    out_dir: str | os.PathLike,
    media: bool = True,
    callbacks: Any = lambda seed_out: (),
    key: str = "selection.retrain_seeds",
    **fit_args: Any,
) -> dict[int, dict[str, Any]]:
    """:func:`fit_classifier` once per seed, in this process (one start-up for all of them),
    each with ``seed`` set to it, into ``out_dir/seed_<seed>/``. ``out_dir`` is replaced whole
    when every fit has finished: a failure leaves none of them. ``media`` False drops the media
    callbacks (:func:`datamap.callbacks.compose.without_media`); ``callbacks(seed_out)`` gives
    the extra callbacks of the fit writing into ``seed_out``. Returns each seed's metrics."""
    from datamap.callbacks.compose import without_media
    from datamap.data.options import seed_list
    from datamap.io import atomic_path
    from datamap.layout import seed_dir

    seeds = seed_list(seeds, key)
    cfg = cfg.copy()
    if not media:
        cfg.callbacks = without_media(cfg.get("callbacks"))
    results = {}
    with atomic_path(out_dir) as staging:
        for seed in seeds:
            cfg.seed = int(seed)
            seed_out = staging / seed_dir(seed)
            log.info("seed %d (%d of %d)", seed, len(results) + 1, len(seeds))
            results[int(seed)] = fit_classifier(cfg, out_dir=seed_out,
                                                callbacks=list(callbacks(seed_out)), **fit_args)
    return results

"""Fit a classifier from config: the train and retrain stages are both this, with different data.

Reads as the lightning-hydra-template entry point does: seed, instantiate datamodule, model,
callbacks, loggers, trainer, fit. Everything the run writes goes to a staging directory that is
moved into place only when fit succeeds, so a failed run leaves no artifact behind.
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from datamap.io import ConfigError, write_json

log = logging.getLogger(__name__)


def _accepts(target: str, name: str) -> bool:
    from hydra.utils import get_class, get_method

    try:
        obj = get_class(target)
    except Exception:  # a factory function rather than a class
        obj = get_method(target)
    try:
        return name in inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False


def instantiate_group(
    group: Mapping[str, Any] | None, key: str, **paths: str
) -> list[Any]:
    """Instantiate every ``_target_`` entry of a config group (callbacks, loggers).

    ``paths`` are directory arguments (``dirpath``, ``save_dir``, ``dir``) the run decides; each
    is passed to the targets whose signature takes it and whose config leaves it unset, so
    configs stay free of run-specific paths (and of ``${hydra:...}`` interpolations).
    """
    from hydra.utils import instantiate

    objects = []
    for name, conf in (group or {}).items():
        if conf is None:
            continue
        if not isinstance(conf, Mapping) or "_target_" not in conf:
            raise ConfigError(f"{key}.{name} needs a _target_ (a class to instantiate)")
        extra = {arg: value for arg, value in paths.items()
                 if conf.get(arg) is None and _accepts(conf["_target_"], arg)}
        objects.append(instantiate(conf, **extra))
    return objects


def _move_into(staging: Path, out_dir: Path, names: list[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        src, dst = staging / name, out_dir / name
        if not src.exists():
            continue
        if dst.is_dir():
            shutil.rmtree(dst)
        os.replace(src, dst)


#: What model.ckpt keeps of a Lightning checkpoint: enough for ``load_from_checkpoint``, nothing
#: run-specific (paths, optimizer state, timings), so identical training gives identical bytes.
MODEL_KEYS = ("state_dict", "hyper_parameters", "epoch", "global_step", "pytorch-lightning_version")


def save_model(model: Any, path: Path, best_checkpoint: str | None = None) -> None:
    """Write a slim, deterministic checkpoint of the best (or else the final) weights."""
    import lightning.pytorch as pl
    import torch

    if best_checkpoint:
        full = torch.load(best_checkpoint, map_location="cpu", weights_only=False)
    else:
        full = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "epoch": model.current_epoch, "global_step": model.global_step,
                "pytorch-lightning_version": pl.__version__}
    slim = {key: full[key] for key in MODEL_KEYS if key in full}
    slim["state_dict"] = {k: v.detach().cpu().contiguous() for k, v in slim["state_dict"].items()}
    torch.save(slim, path)


def load_model(path: str | os.PathLike) -> Any:
    """Load a ``model.ckpt`` written by :func:`save_model` onto the CPU, in eval mode."""
    from datamap.io import DataError
    from datamap.models import Classifier

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: model checkpoint not found; run the train/retrain stage first")
    model = Classifier.load_from_checkpoint(path, map_location="cpu", weights_only=False)
    return model.eval()


def fit_classifier(
    cfg: DictConfig,
    *,
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    train_ids: np.ndarray | None = None,
    record_dynamics: bool = False,
) -> dict[str, Any]:
    """Train one model; write ``model.ckpt``, ``metrics.json``, ``logs/`` (and
    ``dynamics.parquet`` when ``record_dynamics``) into ``out_dir``. Returns the metrics."""
    import lightning.pytorch as pl
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import ModelCheckpoint

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # A sibling, not a child: a failed run must not leave even an empty out_dir behind.
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
    try:
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
        log.info("datamodule: %s", cfg.data.datamodule._target_)
        datamodule = instantiate(cfg.data.datamodule, prepared_dir=str(prepared_dir),
                                 seed=int(cfg.seed), train_ids=train_ids)
        log.info("model: %s", cfg.model._target_)
        model = instantiate(cfg.model, input_shape=list(datamodule.input_shape),
                            num_classes=datamodule.num_classes)
        callbacks = instantiate_group(cfg.get("callbacks"), "callbacks",
                                      dirpath=str(staging / "checkpoints"))
        if record_dynamics:
            callbacks.append(instantiate(cfg.dynamics, dirpath=str(staging), seed=int(cfg.seed)))
        loggers = instantiate_group(cfg.get("logger"), "logger",
                                    save_dir=str(staging / "logs"), dir=str(staging / "logs"))
        trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks,
                                          logger=loggers or False,
                                          default_root_dir=str(staging))
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        log.info("fit: %d training examples, %s", len(datamodule.split("train")),
                 f"up to {trainer.max_epochs} epochs")
        trainer.fit(model, datamodule=datamodule)

        checkpoint = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
        best = checkpoint.best_model_path if checkpoint is not None else ""
        if trainer.is_global_zero:
            save_model(model, staging / "model.ckpt", best_checkpoint=best or None)
        metrics = {
            key.replace("/", "_"): round(float(value), 6)
            for key, value in sorted(trainer.callback_metrics.items())
            if not key.endswith("_step")
        }
        metrics.update(epochs=int(trainer.current_epoch), train_examples=len(
            datamodule.split("train")))
        if trainer.is_global_zero:
            write_json(staging / "metrics.json", metrics)
            _move_into(staging, out_dir,
                       ["model.ckpt", "metrics.json", "logs", "dynamics.parquet"])
        return metrics
    finally:
        shutil.rmtree(staging, ignore_errors=True)

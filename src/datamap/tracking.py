"""Logger-agnostic tracking: media and run summaries, each logger in its native form.

The media callbacks (:mod:`datamap.callbacks`) and the cartography stage call this module; it
sends what they give it to every active Lightning logger:

============== ==================================== ============================ ==================
logger         image                                table                        run summary
============== ==================================== ============================ ==================
CSV            ``<log_dir>/media/<key>/epoch_NNN.png`` ``.../epoch_NNN.csv``        --
TensorBoard    ``add_image``                        ``add_text`` (markdown)      --
W&B            ``wandb.Image``                      ``wandb.Table`` (thumbnails) ``run.summary``
MLflow         artifact ``media/<key>/epoch_NNN.png`` artifact ``.csv``            run metrics
DVCLive        ``plots/images/<key>/epoch_NNN.png``  -- (its image)               --
============== ==================================== ============================ ==================

Loggers are recognised by class name, so this module imports none of the optional packages; a
logger of another kind gets nothing (one debug line). Run summaries go to the loggers that have
them: the training run is found again from ``runs.json``, which :func:`write_runs` leaves in
the run's log directory. DVCLive has no run to reopen -- its files are the train stage's
output -- and the cartography summary is already a DVC metric (``summary.json``).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datamap.io import atomic_path, read_json, write_json, write_text

log = logging.getLogger(__name__)

#: The file in a run's log directory that names the runs of the W&B and MLflow loggers.
RUNS_FILE = "runs.json"

#: Optional logger packages: the module a logger's ``_target_`` needs -> the extra to install.
LOGGER_EXTRAS = {
    "tensorboard": ("tensorboard", "tensorboardX"),
    "wandb": ("wandb",),
    "mlflow": ("mlflow",),
    "dvclive": ("dvclive",),
}
#: Which extra a logger class needs (by class name).
_CLASS_EXTRAS = {
    "TensorBoardLogger": "tensorboard",
    "WandbLogger": "wandb",
    "MLFlowLogger": "mlflow",
    "DVCLiveLogger": "dvclive",
}


def missing_extra(target: str) -> str | None:
    """The extra a ``_target_`` needs and that is not installed, or None."""
    import importlib.util

    name = target.rsplit(".", 1)[-1]
    extra = _CLASS_EXTRAS.get(name) or next(
        (e for e in LOGGER_EXTRAS if target.startswith(f"{e}.")), None)
    if extra is None:
        return None
    if any(importlib.util.find_spec(module) is not None for module in LOGGER_EXTRAS[extra]):
        return None
    return extra


def allow_local_stores(group: Mapping[str, Any] | None) -> None:
    """Let MLflow use its local file store (``./mlruns``, what ``logger=mlflow`` configures).

    MLflow 3 refuses the file store unless ``MLFLOW_ALLOW_FILE_STORE`` is set (it prefers a
    database); a value the user set is kept.
    """
    if any(isinstance(conf, Mapping) and str(conf.get("_target_", "")).endswith("MLFlowLogger")
           for conf in (group or {}).values()):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def anchor_local_stores(group: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``logger`` group with a relative MLflow file store (``save_dir: mlruns``) made
    absolute: MLflow caches one store per tracking URI, so a relative one would silently keep
    pointing at the first working directory it was used from."""
    from omegaconf import OmegaConf

    entries = (OmegaConf.to_container(group, resolve=True) if OmegaConf.is_config(group)
               else dict(group or {}))
    for conf in entries.values():
        if (isinstance(conf, dict) and str(conf.get("_target_", "")).endswith("MLFlowLogger")
                and conf.get("save_dir") and not conf.get("tracking_uri")):
            conf["save_dir"] = os.path.abspath(conf["save_dir"])
    return entries


def _kind(logger: Any) -> str | None:
    names = {cls.__name__ for cls in type(logger).__mro__}
    for name, kind in (("CSVLogger", "csv"), ("TensorBoardLogger", "tensorboard"),
                       ("WandbLogger", "wandb"), ("MLFlowLogger", "mlflow"),
                       ("DVCLiveLogger", "dvclive")):
        if name in names:
            return kind
    return None


# --------------------------------------------------------------------------------------------
# images as bytes


def png_bytes(image: np.ndarray) -> bytes:
    """PNG of an RGB (H, W, 3) or grey (H, W) uint8 array, without software or time stamps.
    Fast compression: drawn figures are flat colours, and encoding dominates the media's cost."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _file_name(key: str, epoch: int, suffix: str) -> str:
    return f"{key}/epoch_{epoch:03d}{suffix}"


def markdown_table(frame: Any) -> str:
    """A small DataFrame as a markdown table (TensorBoard renders markdown in its text tab)."""
    columns = [str(c) for c in frame.columns]

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# media


def log_image(loggers: Iterable[Any], key: str, image: np.ndarray, *, step: int, epoch: int,
              caption: str | None = None) -> list[str]:
    """Send an RGB uint8 image (H, W, 3) to every logger; return the kinds that took it."""
    done = []
    for logger in loggers:
        kind = _kind(logger)
        if kind == "csv":
            path = Path(logger.log_dir) / "media" / _file_name(key, epoch, ".png")
            with atomic_path(path) as tmp:
                tmp.write_bytes(png_bytes(image))
        elif kind == "tensorboard":
            logger.experiment.add_image(key, image, global_step=step, dataformats="HWC")
        elif kind == "wandb":
            extra = {"caption": [caption]} if caption else {}
            logger.log_image(key, images=[image], step=step, **extra)
        elif kind == "mlflow":
            logger.experiment.log_image(logger.run_id, image,
                                        artifact_file="media/" + _file_name(key, epoch, ".png"))
        elif kind == "dvclive":
            logger.experiment.log_image(_file_name(key, epoch, ".png"), image)
        else:
            log.debug("%s: no image support for %s", key, type(logger).__name__)
            continue
        done.append(kind)
    return done


def log_table(loggers: Iterable[Any], key: str, frame: Any, *, step: int, epoch: int,
              thumbnails: Sequence[np.ndarray | None] | None = None) -> list[str]:
    """Send a small DataFrame to every logger that has tables; return the kinds that took it.

    ``thumbnails`` (one image or None per row) replace the ``input`` column in a W&B table,
    which shows images in cells; the other forms keep the text preview.
    """
    done = []
    for logger in loggers:
        kind = _kind(logger)
        if kind == "csv":
            write_text(Path(logger.log_dir) / "media" / _file_name(key, epoch, ".csv"),
                       frame.to_csv(index=False))
        elif kind == "tensorboard":
            logger.experiment.add_text(key, markdown_table(frame), global_step=step)
        elif kind == "wandb":
            import wandb

            data = frame.copy()
            if thumbnails is not None and any(t is not None for t in thumbnails):
                data["input"] = [wandb.Image(t) if t is not None else text
                                 for t, text in zip(thumbnails, frame["input"], strict=True)]
            logger.log_table(key, dataframe=data, step=step)
        elif kind == "mlflow":
            logger.experiment.log_text(logger.run_id, frame.to_csv(index=False),
                                       artifact_file="media/" + _file_name(key, epoch, ".csv"))
        else:
            continue  # DVCLive has no tables: it gets the rendered image
        done.append(kind)
    return done


# --------------------------------------------------------------------------------------------
# the runs of a training, and summaries logged to them later


def write_runs(loggers: Iterable[Any], path: str | os.PathLike) -> dict[str, Any]:
    """Write ``runs.json``: how to reopen the W&B and MLflow runs of these loggers ({} when
    there are none, so the file, a dependency of the cartography stage, always exists)."""
    runs: dict[str, Any] = {}
    for logger in loggers:
        kind = _kind(logger)
        if kind == "wandb":
            run = logger.experiment
            runs["wandb"] = {"id": run.id, "project": run.project, "entity": run.entity or None,
                             "dir": str(logger.save_dir or "."),
                             "mode": "offline" if _wandb_offline(run) else "online"}
        elif kind == "mlflow":
            runs["mlflow"] = {"run_id": logger.run_id, "experiment_id": logger.experiment_id,
                              "tracking_uri": logger._tracking_uri}
    write_json(path, runs)
    return runs


def finish_runs(loggers: Iterable[Any]) -> None:
    """End the W&B run of a finished fit (Lightning leaves it open; a later fit in the same
    process would otherwise log into it)."""
    for logger in loggers:
        if _kind(logger) == "wandb":
            logger.experiment.finish()


def _wandb_offline(run: Any) -> bool:
    settings = getattr(run, "settings", None)
    mode = getattr(settings, "mode", None) or os.environ.get("WANDB_MODE", "")
    return str(mode) in ("offline", "dryrun")


def summary_values(summary: Mapping[str, Any], prefix: str = "cartography") -> dict[str, float]:
    """The cartography summary's headline numbers, flat: region counts and, with injected label
    noise, each score's AUROC at finding the flipped labels and hard-to-learn's share of them."""
    values = {f"{prefix}/regions/{region}": float(count)
              for region, count in summary.get("regions", {}).items()}
    noise = summary.get("noise") or {}
    for score, result in noise.get("scores", {}).items():
        values[f"{prefix}/label_error_auroc/{score}"] = float(result["auroc"])
    if "hard_to_learn_share" in noise:
        values[f"{prefix}/hard_to_learn_share_of_flipped"] = float(noise["hard_to_learn_share"])
    return values


def log_run_summary(runs_file: str | os.PathLike, values: Mapping[str, float]) -> list[str]:
    """Add ``values`` to the summaries of the runs ``runs_file`` names; return the loggers done.

    W&B: the run is resumed by id (in the mode it was recorded in) and its summary updated;
    offline, this makes a second offline run directory with the same id, synced after the first
    with ``wandb sync --append``. MLflow: the values become metrics of the run.
    """
    runs = read_json(runs_file, "runs file")
    done = []
    if "wandb" in runs:
        _wandb_summary(runs["wandb"], values)
        done.append("wandb")
    if "mlflow" in runs:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # see allow_local_stores
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        run = runs["mlflow"]
        client = MlflowClient(tracking_uri=run["tracking_uri"])
        finished = client.get_run(run["run_id"]).info.end_time or 0
        client.log_batch(run["run_id"], metrics=[
            Metric(key, float(value), finished, 0) for key, value in sorted(values.items())])
        done.append("mlflow")
    if done:
        log.info("run summary: %d values logged to %s", len(values), ", ".join(done))
    return done


def _wandb_summary(run: Mapping[str, Any], values: Mapping[str, float]) -> None:
    import wandb

    resumed = wandb.init(id=run["id"], project=run["project"], entity=run.get("entity"),
                         dir=run["dir"], mode=run.get("mode", "online"), resume="allow")
    try:
        resumed.summary.update(dict(values))
    finally:
        resumed.finish()

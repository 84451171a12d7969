"""Logger-agnostic tracking: media and run summaries, each logger in its native form.

The media callbacks (:mod:`datamap.callbacks`) and the cartography stage call this module; it
hands what they give it to the adapter of every active Lightning logger
(:mod:`datamap.tracking.adapters`, one module per kind):

============== ==================================== ============================ ==================
logger         image                                table                        run summary
============== ==================================== ============================ ==================
CSV            ``<log_dir>/media/<key>/epoch_NNN.png`` ``.../epoch_NNN.csv``        --
TensorBoard    ``add_image``                        ``add_text`` (markdown)      --
W&B            ``wandb.Image``                      ``wandb.Table`` (thumbnails) ``run.summary``
MLflow         artifact ``media/<key>/epoch_NNN.png`` artifact ``.csv``            run metrics
DVCLive        ``plots/images/<key>/epoch_NNN.png``  -- (its image)               --
============== ==================================== ============================ ==================

A logger no adapter handles gets nothing (one debug line). Run summaries go to the loggers that
have runs: the training run is found again from ``runs.json``, which :func:`write_runs` leaves
in the run's log directory.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from datamap.io import read_json, write_json
from datamap.markdown import markdown_table as _markdown_table
from datamap.tracking.adapter import LoggerAdapter

log = logging.getLogger(__name__)

#: The file in a run's log directory that names the runs of the loggers that have one.
RUNS_FILE = "runs.json"


def _adapters() -> tuple[LoggerAdapter, ...]:
    from datamap.tracking.adapters import all_adapters

    return all_adapters()


def adapter_of(logger: Any) -> LoggerAdapter | None:
    """The adapter that handles ``logger`` (None for a logger of another kind)."""
    return next((a for a in _adapters() if a.handles(logger)), None)


def _adapter_by_kind(kind: str) -> LoggerAdapter | None:
    return next((a for a in _adapters() if a.kind == kind), None)


def missing_extra(target: str) -> str | None:
    """The extra a logger ``_target_`` needs and that is not installed, or None."""
    import importlib.util

    adapter = next((a for a in _adapters() if a.extra and a.configures(target)), None)
    if adapter is None or any(importlib.util.find_spec(m) is not None for m in adapter.modules):
        return None
    return adapter.extra


def prepare_logger_configs(group: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``logger`` group as plain dicts, each entry adjusted by its adapter before it is
    instantiated (an MLflow file store made absolute, ...)."""
    from omegaconf import OmegaConf

    entries = (OmegaConf.to_container(group, resolve=True) if OmegaConf.is_config(group)
               else dict(group or {}))
    for name, conf in entries.items():
        if isinstance(conf, dict) and "_target_" in conf:
            adapter = next((a for a in _adapters() if a.configures(str(conf["_target_"]))), None)
            if adapter is not None:
                entries[name] = adapter.prepare(conf)
    return entries


# --------------------------------------------------------------------------------------------
# images and tables as the loggers take them


def png_bytes(image: np.ndarray) -> bytes:
    """PNG of an RGB (H, W, 3) or grey (H, W) uint8 array, without software or time stamps.
    Fast compression: drawn figures are flat colours, and encoding dominates the media's cost."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def markdown_table(frame: Any) -> str:
    """A small DataFrame as a markdown table (TensorBoard renders markdown in its text tab)."""
    return _markdown_table([str(c) for c in frame.columns], frame.itertuples(index=False))


def _send(loggers: Iterable[Any], what: str, call: Any) -> list[str]:
    """``call(adapter, logger)`` for every logger with an adapter; the kinds that took it."""
    done = []
    for logger in loggers:
        adapter = adapter_of(logger)
        if adapter is not None and call(adapter, logger):
            done.append(adapter.kind)
        else:
            log.debug("%s: not supported by %s", what, type(logger).__name__)
    return done


def log_image(loggers: Iterable[Any], key: str, image: np.ndarray, *, step: int, epoch: int,
              caption: str | None = None) -> list[str]:
    """Send an RGB uint8 image (H, W, 3) to every logger; return the kinds that took it."""
    return _send(loggers, f"{key} (image)", lambda adapter, logger: adapter.log_image(
        logger, key, image, step=step, epoch=epoch, caption=caption))


def log_table(loggers: Iterable[Any], key: str, frame: Any, *, step: int, epoch: int,
              thumbnails: Sequence[np.ndarray | None] | None = None) -> list[str]:
    """Send a small DataFrame to every logger that has tables; return the kinds that took it.

    ``thumbnails`` (one image or None per row) replace the ``input`` column in a W&B table,
    which shows images in cells; the other forms keep the text preview.
    """
    return _send(loggers, f"{key} (table)", lambda adapter, logger: adapter.log_table(
        logger, key, frame, step=step, epoch=epoch, thumbnails=thumbnails))


# --------------------------------------------------------------------------------------------
# the runs of a training, and summaries logged to them later


def write_runs(loggers: Iterable[Any], path: str | os.PathLike) -> dict[str, Any]:
    """Write ``runs.json``: how to reopen the runs of these loggers ({} when none has one, so
    the file, a dependency of the cartography stage, always exists)."""
    runs: dict[str, Any] = {}
    for logger in loggers:
        adapter = adapter_of(logger)
        record = adapter.run_record(logger) if adapter is not None else None
        if record is not None:
            runs[adapter.kind] = record
    write_json(path, runs)
    return runs


def finish_runs(loggers: Iterable[Any]) -> None:
    """End the runs of a finished fit."""
    for logger in loggers:
        adapter = adapter_of(logger)
        if adapter is not None:
            adapter.finish(logger)


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
    """Add ``values`` to the summaries of the runs ``runs_file`` names; return the loggers done
    (W&B: the run resumed by id and its summary updated; MLflow: metrics of the run)."""
    runs = read_json(runs_file, "runs file")
    done = []
    for kind, record in sorted(runs.items()):
        adapter = _adapter_by_kind(kind)
        if adapter is None:
            log.warning("%s: no adapter for a %s run; its summary is not logged", runs_file, kind)
            continue
        adapter.log_summary(record, values)
        done.append(kind)
    if done:
        log.info("run summary: %d values logged to %s", len(values), ", ".join(done))
    return done

"""Weights & Biases: ``wandb.Image``, ``wandb.Table`` (thumbnails in cells) and the run's
summary, updated by resuming the run by id (offline too: a second offline run directory with the
same id, synced after the first with ``wandb sync --append``)."""

from __future__ import annotations

import os
from typing import Any

from datamap.tracking.adapter import LoggerAdapter


def _offline(run: Any) -> bool:
    settings = getattr(run, "settings", None)
    mode = getattr(settings, "mode", None) or os.environ.get("WANDB_MODE", "")
    return str(mode) in ("offline", "dryrun")


class WandbAdapter(LoggerAdapter):
    kind = "wandb"
    logger_classes = ("WandbLogger",)
    extra = "wandb"
    modules = ("wandb",)

    def log_image(self, logger, key, image, *, step, epoch, caption) -> bool:
        extra = {"caption": [caption]} if caption else {}
        logger.log_image(key, images=[image], step=step, **extra)
        return True

    def log_table(self, logger, key, frame, *, step, epoch, thumbnails) -> bool:
        import wandb

        data = frame.copy()
        if thumbnails is not None and any(t is not None for t in thumbnails):
            data["input"] = [wandb.Image(t) if t is not None else text
                             for t, text in zip(thumbnails, frame["input"], strict=True)]
        logger.log_table(key, dataframe=data, step=step)
        return True

    def run_record(self, logger) -> dict[str, Any]:
        run = logger.experiment
        return {"id": run.id, "project": run.project, "entity": run.entity or None,
                "dir": str(logger.save_dir or "."),
                "mode": "offline" if _offline(run) else "online"}

    def finish(self, logger) -> None:
        # Lightning leaves the run open; a later fit in the same process would log into it
        logger.experiment.finish()

    def log_summary(self, record, values) -> None:
        import wandb

        resumed = wandb.init(id=record["id"], project=record["project"],
                             entity=record.get("entity"), dir=record["dir"],
                             mode=record.get("mode", "online"), resume="allow")
        try:
            resumed.summary.update(dict(values))
        finally:
            resumed.finish()


ADAPTER = WandbAdapter()

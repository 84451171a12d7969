"""DVCLive: images under ``plots/images/<key>/epoch_NNN.png`` (tables reach it as their rendered
image). It has no run to reopen: its files are the train stage's output, and the cartography
summary is a DVC metric already (``summary.json``)."""

from __future__ import annotations

from datamap.tracking.adapter import LoggerAdapter, media_file


class DvcLiveAdapter(LoggerAdapter):
    kind = "dvclive"
    logger_classes = ("DVCLiveLogger",)
    extra = "dvclive"
    modules = ("dvclive",)

    def log_image(self, logger, key, image, *, step, epoch, caption) -> bool:
        logger.experiment.log_image(media_file(key, epoch, ".png"), image)
        return True


ADAPTER = DvcLiveAdapter()

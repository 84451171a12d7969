"""TensorBoard: images with ``add_image``, tables as markdown with ``add_text``."""

from __future__ import annotations

from datamap.tracking.adapter import LoggerAdapter


class TensorBoardAdapter(LoggerAdapter):
    kind = "tensorboard"
    logger_classes = ("TensorBoardLogger",)
    extra = "tensorboard"
    modules = ("tensorboard", "tensorboardX")

    def log_image(self, logger, key, image, *, step, epoch, caption) -> bool:
        logger.experiment.add_image(key, image, global_step=step, dataformats="HWC")
        return True

    def log_table(self, logger, key, frame, *, step, epoch, thumbnails) -> bool:
        from datamap.tracking.loggers import markdown_table

        logger.experiment.add_text(key, markdown_table(frame), global_step=step)
        return True


ADAPTER = TensorBoardAdapter()

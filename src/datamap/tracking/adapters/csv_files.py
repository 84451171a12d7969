"""CSV logger: images and tables as files under ``<log_dir>/media/<key>/epoch_NNN.{png,csv}``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datamap.io import atomic_path, write_csv
from datamap.tracking.adapter import LoggerAdapter, media_file


class CsvAdapter(LoggerAdapter):
    kind = "csv"
    logger_classes = ("CSVLogger",)

    def log_image(self, logger, key, image, *, step, epoch, caption) -> bool:
        from datamap.tracking.loggers import png_bytes

        with atomic_path(Path(logger.log_dir) / "media" / media_file(key, epoch, ".png")) as tmp:
            tmp.write_bytes(png_bytes(image))
        return True

    def log_table(self, logger: Any, key, frame, *, step, epoch, thumbnails) -> bool:
        write_csv(Path(logger.log_dir) / "media" / media_file(key, epoch, ".csv"), frame)
        return True


ADAPTER = CsvAdapter()

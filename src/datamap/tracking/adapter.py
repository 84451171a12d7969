"""What a logger adapter is: how one kind of Lightning logger takes datamap's media and run
summaries in its native form.

An adapter is one module in :mod:`datamap.tracking.adapters` defining ``ADAPTER``, an instance
of a :class:`LoggerAdapter` subclass; adding a logger is that module plus its config file under
``conf/logger/``. Loggers are recognised by class name (their class or a base class), so no
optional package is imported until a logger of that kind is configured.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np


def media_file(key: str, epoch: int, suffix: str) -> str:
    """``<key>/epoch_NNN<suffix>``: where a medium of one epoch goes below a logger's files."""
    return f"{key}/epoch_{epoch:03d}{suffix}"


class LoggerAdapter:
    """The base adapter: a logger that takes nothing but Lightning's own scalars.

    Subclasses set :attr:`kind`, :attr:`logger_classes` and, for an optional package,
    :attr:`extra` and :attr:`modules`, and override what their logger supports.
    """

    #: The adapter's name (``runs.json`` key, log messages).
    kind: ClassVar[str] = ""
    #: Names of the Lightning logger classes this adapter handles (subclasses count too).
    logger_classes: ClassVar[tuple[str, ...]] = ()
    #: The pip extra that installs the logger's package (None: always installed).
    extra: ClassVar[str | None] = None
    #: Modules of which one must be importable for the logger to work.
    modules: ClassVar[tuple[str, ...]] = ()

    def handles(self, logger: Any) -> bool:
        return bool({cls.__name__ for cls in type(logger).__mro__} & set(self.logger_classes))

    def configures(self, target: str) -> bool:
        """Whether a ``_target_`` builds this adapter's logger."""
        return target.rsplit(".", 1)[-1] in self.logger_classes or any(
            target.startswith(f"{module}.") for module in self.modules)

    def prepare(self, conf: dict[str, Any]) -> dict[str, Any]:
        """The logger's config entry, adjusted before it is instantiated (default: as it is)."""
        return conf

    def log_image(self, logger: Any, key: str, image: np.ndarray, *, step: int, epoch: int,
                  caption: str | None) -> bool:
        """Send an RGB uint8 image (H, W, 3); False when the logger has no images."""
        return False

    def log_table(self, logger: Any, key: str, frame: Any, *, step: int, epoch: int,
                  thumbnails: Sequence[np.ndarray | None] | None) -> bool:
        """Send a small DataFrame; False when the logger has no tables."""
        return False

    def run_record(self, logger: Any) -> dict[str, Any] | None:
        """How to reopen the logger's run later (a ``runs.json`` entry), None if it has none."""
        return None

    def finish(self, logger: Any) -> None:
        """End the logger's run after a fit."""

    def log_summary(self, record: Mapping[str, Any], values: Mapping[str, float]) -> None:
        """Add ``values`` to the summary of the run ``record`` (from :meth:`run_record`)."""


def allow_file_store() -> None:
    """Let MLflow use its local file store: MLflow 3 refuses it unless
    ``MLFLOW_ALLOW_FILE_STORE`` is set (it prefers a database); a value the user set is kept."""
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")

"""Tracking: media and run summaries sent to every configured Lightning logger, one adapter per
logger kind (:mod:`datamap.tracking.adapters`). Names load on first use (see ``datamap.data``).
"""

from __future__ import annotations

from datamap import lazy_attributes

_LOGGERS = "datamap.tracking.loggers"

#: Public name -> the module that defines it.
_EXPORTS = {
    "LoggerAdapter": "datamap.tracking.adapter",
    "RUNS_FILE": _LOGGERS,
    "finish_runs": _LOGGERS,
    "log_image": _LOGGERS,
    "log_run_summary": _LOGGERS,
    "log_table": _LOGGERS,
    "missing_extra": _LOGGERS,
    "prepare_logger_configs": _LOGGERS,
    "summary_values": _LOGGERS,
    "write_runs": _LOGGERS,
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_attributes(__name__, _EXPORTS)

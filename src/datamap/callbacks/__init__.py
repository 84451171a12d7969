"""Lightning callbacks of datamap: media (prediction samples, image predictions, confusion
matrix), training curves for DVC plots, and the progress display.

The media callbacks are logger-agnostic: they send what they draw through
:mod:`datamap.tracking.loggers` to every active logger in its native form. Names are loaded from
their modules on first use (see ``datamap.data``).
"""

from __future__ import annotations

from datamap import lazy_attributes

#: Public name -> the module that defines it.
_EXPORTS = {
    "ConfusionMatrix": "datamap.callbacks.confusion_matrix",
    "EpochLines": "datamap.callbacks.progress",
    "ImagePredictions": "datamap.callbacks.image_predictions",
    "PredictionSamples": "datamap.callbacks.prediction_samples",
    "ResumableCheckpoint": "datamap.callbacks.checkpoint",
    "TrainingCurves": "datamap.callbacks.curves",
    "ValidationMedia": "datamap.callbacks.media",
    "progress_bar": "datamap.callbacks.progress",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_attributes(__name__, _EXPORTS)

"""MLflow: images and tables as run artifacts under ``media/``, run summaries as run metrics.

``logger=mlflow`` logs to a local file store (``save_dir: mlruns``); MLflow caches one store per
tracking URI, so a relative store is made absolute before the logger is built (else it would
keep pointing at the first working directory it was used from).
"""

from __future__ import annotations

import os
from typing import Any

from datamap.io import guarded_frame
from datamap.tracking.adapter import LoggerAdapter, allow_file_store, media_file


class MlflowAdapter(LoggerAdapter):
    kind = "mlflow"
    logger_classes = ("MLFlowLogger",)
    extra = "mlflow"
    modules = ("mlflow",)

    def prepare(self, conf: dict[str, Any]) -> dict[str, Any]:
        allow_file_store()
        if conf.get("save_dir") and not conf.get("tracking_uri"):
            conf = {**conf, "save_dir": os.path.abspath(conf["save_dir"])}
        return conf

    def log_image(self, logger, key, image, *, step, epoch, caption) -> bool:
        logger.experiment.log_image(logger.run_id, image,
                                    artifact_file="media/" + media_file(key, epoch, ".png"))
        return True

    def log_table(self, logger, key, frame, *, step, epoch, thumbnails) -> bool:
        logger.experiment.log_text(logger.run_id, guarded_frame(frame).to_csv(index=False),
                                   artifact_file="media/" + media_file(key, epoch, ".csv"))
        return True

    def run_record(self, logger) -> dict[str, Any]:
        return {"run_id": logger.run_id, "experiment_id": logger.experiment_id,
                "tracking_uri": logger._tracking_uri}

    def log_summary(self, record, values) -> None:
        allow_file_store()
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=record["tracking_uri"])
        finished = client.get_run(record["run_id"]).info.end_time or 0
        client.log_batch(record["run_id"], metrics=[
            Metric(key, float(value), finished, 0) for key, value in sorted(values.items())])


ADAPTER = MlflowAdapter()

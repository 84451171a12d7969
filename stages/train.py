"""train: fit the classifier on the prepared train split while recording training dynamics.

Checkpoints go to ``data/train/checkpoints`` (a persistent DVC out): ``resume: true``
continues an interrupted run of the same configuration from its last checkpoint,
``resume: <path.ckpt>`` from that checkpoint; ``resume: false`` clears the directory first.
The per-epoch training curves go to ``data/curves/train.csv`` (a DVC plot).
"""

import time

import hydra

from datamap.callbacks.curves import TrainingCurves
from datamap.data import read_meta
from datamap.pipeline.stage import stage
from datamap.selection.plan import record_wall_time
from datamap.training.fit import fit_classifier


@hydra.main(config_path="../conf", config_name="config", version_base=None)
@stage
def main(cfg, inputs, outputs):
    started = time.monotonic()
    fit_classifier(cfg, prepared_dir=inputs.prepared, out_dir=outputs.train, record_dynamics=True,
                   checkpoint_dir=outputs.train / "checkpoints", resume=cfg.get("resume", False),
                   callbacks=[TrainingCurves(outputs.curves / "train.csv")])
    # this machine's pace, for the retraining grid's estimate (datamap plan): a local note,
    # never a DVC output
    record_wall_time("train", time.monotonic() - started,
                     read_meta(inputs.prepared)["sizes"]["train"], cfg.trainer.max_epochs)


if __name__ == "__main__":
    main()

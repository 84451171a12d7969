"""Where each stage's artifacts live, relative to a root (the repo under DVC).

dvc.yaml names the same paths; ``tests/test_pipeline_config.py`` checks they agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: In the evaluate stage's directory: every spec's metrics, and a directory per spec of
#: predictions and of confusion data.
EVAL_METRICS = "metrics.json"
EVAL_PREDICTIONS = "predictions"
EVAL_CONFUSION = "confusion"


def seed_dir(seed: int) -> str:
    """The directory of one seed's fit inside a retrain output: ``seed_<seed>``."""
    return f"seed_{seed}"


def _step_dir(name: str, doc: str | None = None) -> property:
    """A pipeline step's directory under ``data/``."""
    return property(lambda self: self.data / name,
                    doc=doc or f"The {name} step's directory, ``data/{name}``.")


@dataclass(frozen=True)
class Layout:
    root: Path = Path(".")

    @property
    def data(self) -> Path:
        return self.root / "data"

    prepared = _step_dir("prepared")
    train = _step_dir("train")
    cartography = _step_dir("cartography")
    curves = _step_dir("curves", "Per-epoch training curves (DVC plots): ``train.csv``, "
                       "``retrain/<spec>.csv``.")
    report = _step_dir("report")
    eval = _step_dir("eval", "The evaluate stage's directory: every spec's metrics, predictions "
                     "and confusion data (see :mod:`datamap.evaluation.evaluate`).")

    def subset(self, spec: str) -> Path:
        return self.data / "subsets" / spec

    def retrain(self, spec: str) -> Path:
        return self.data / "retrain" / spec

    def retrained_models(self, spec: str) -> dict[int, Path]:
        """seed -> ``model.ckpt`` of each seed's fit in ``retrain(spec)``, by ascending seed."""
        found = {}
        for path in self.retrain(spec).glob("seed_*/model.ckpt"):
            match = re.fullmatch(r"seed_(-?\d+)", path.parent.name)
            if match:
                found[int(match.group(1))] = path
        return dict(sorted(found.items()))

    @property
    def eval_metrics(self) -> Path:
        """Every spec's evaluation metrics (a DVC metric)."""
        return self.eval / EVAL_METRICS

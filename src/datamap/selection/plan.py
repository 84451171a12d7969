"""The retraining grid's plan: how many fits the selection config asks for, and what they cost.

Every selection spec is retrained once per ``selection.retrain_seeds`` seed, each fit for at most
``trainer.max_epochs`` epochs over the spec's examples. The cost of the grid is stated in units
of the train stage's own work (its training examples x its epochs): a fit on a third of the data
costs a third of the train stage's fit. When the train stage's wall time on this machine is known
(:func:`record_wall_time` keeps it in :data:`TIMINGS_FILE`, git-ignored, outside DVC's outputs),
the plan turns that into minutes. The cartography stage logs the plan before the grid starts,
and ``datamap plan`` prints it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datamap.io import private_dir, write_json
from datamap.markdown import Markup, markdown_table

#: Wall times of the stages last run here (stage name -> seconds, examples, epochs): a local
#: record for estimates, never a DVC output (it differs from run to run and machine to machine).
TIMINGS_FILE = Path(".datamap") / "timings.json"
#: A grid costing more than this many train-stage fits gets a hint towards a smaller one.
LARGE_GRID = 10.0


@dataclass(frozen=True)
class SpecPlan:
    """One spec's share of the grid: its examples (None: an ids file not there yet)."""

    name: str
    examples: int | None


@dataclass(frozen=True)
class GridPlan:
    """The retraining grid: specs x seeds fits of at most ``epochs`` epochs each.

    ``relative_cost``: the grid's example-epochs over the train stage's (``train_examples`` x
    ``train_epochs``); ``train_seconds``: the train stage's last wall time here, if known.
    """

    specs: tuple[SpecPlan, ...]
    seeds: int
    epochs: int
    train_examples: int
    train_epochs: int
    train_seconds: float | None = None

    @property
    def fits(self) -> int:
        return len(self.specs) * self.seeds

    @property
    def relative_cost(self) -> float:
        known = sum(s.examples for s in self.specs if s.examples is not None)
        base = max(self.train_examples * self.train_epochs, 1)
        return known * self.seeds * self.epochs / base

    @property
    def estimated_seconds(self) -> float | None:
        if self.train_seconds is None:
            return None
        return self.relative_cost * self.train_seconds

    def summary(self) -> str:
        """One line: fits, their cost against the train stage, the estimate and, for a large
        grid, the option that makes it small."""
        text = (f"retraining grid: {self.fits} fits ({len(self.specs)} specs x {self.seeds} "
                f"seed(s), at most {self.epochs} epochs each) = {self.relative_cost:.1f}x the "
                "train stage's work")
        seconds = self.estimated_seconds
        if seconds is not None:
            text += f", about {_duration(seconds)} at this machine's pace"
        if self.relative_cost > LARGE_GRID:
            text += ("; for a quick look use selection=quick (3 fits), or trim "
                     "selection.sweep / selection.retrain_seeds")
        return text

    def table(self) -> str:
        """A Markdown table: each spec's examples and fits."""
        rows = [[Markup(f"`{s.name}`"), "?" if s.examples is None else f"{s.examples:,}",
                 str(self.seeds)] for s in self.specs]
        return markdown_table(["spec", "examples", "fits"], rows)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def spec_examples(definition: Mapping[str, Any], n_train: int, name: str = "spec",
                  root: str | os.PathLike = ".", key: str | None = None) -> int | None:
    """How many examples spec ``name`` selects from ``n_train``, counted as the selection
    counts them: its criteria's group sizes (cumulative rounding, never over N), or the ids its
    file lists (None while the file is absent; ``root``: the repository the path is relative
    to). Refuses a definition the selection would refuse (``key``: where it is defined)."""
    from datamap.selection.ranking import (
        group_sizes,
        ids_file_key,
        ids_file_path,
        parse_spec,
        read_ids_file,
    )

    path = ids_file_path(name, definition, root)
    if path is not None:
        return len(read_ids_file(path, ids_file_key(name))) if path.is_file() else None
    criteria = parse_spec(name, definition, key)
    # the sizes select() draws (a stratified draw hands a class's shortfall to the others)
    return sum(group_sizes([c.fraction for c in criteria], n_train))


def grid_plan(definitions: Mapping[str, Mapping[str, Any]], n_train: int, seeds: Sequence[int],
              epochs: int, train_epochs: int | None = None,
              timings: Mapping[str, Any] | None = None, root: str | os.PathLike = ".",
              keys: Mapping[str, str] | None = None) -> GridPlan:
    """The plan of retraining ``definitions`` (spec name -> definition, as
    ``selection.all_specs``) with ``seeds`` for ``epochs`` epochs on a training split of
    ``n_train`` examples; ``train_epochs``: the train stage's epochs (default ``epochs``);
    ``timings``: :func:`read_timings`, for the estimate in minutes; ``root``: the repository
    (files of ids); ``keys``: spec name -> where it is defined, for messages."""
    specs = tuple(SpecPlan(name, spec_examples(d, n_train, name, root, (keys or {}).get(name)))
                  for name, d in definitions.items())
    train = (timings or {}).get("train")
    train_epochs = epochs if train_epochs is None else train_epochs
    seconds = None
    # the train stage's pace counts only when it ran on the data and epochs planned here
    if isinstance(train, Mapping) and train.get("examples") == n_train \
            and train.get("epochs") == train_epochs:
        seconds = float(train["seconds"])
    return GridPlan(specs, len(seeds), int(epochs), int(n_train), int(train_epochs), seconds)


def read_timings(root: str | os.PathLike = ".") -> dict[str, Any]:
    """The stage wall times recorded under ``root`` ({} when none, or unreadable: they only
    refine an estimate)."""
    try:
        data = json.loads((Path(root) / TIMINGS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_wall_time(stage: str, seconds: float, examples: int, epochs: int,
                     root: str | os.PathLike = ".") -> None:
    """Keep ``stage``'s wall time for later plans (atomically; a failure to write is not the
    stage's failure, the estimate just stays unknown)."""
    timings = read_timings(root)
    timings[stage] = {"seconds": round(float(seconds), 3), "examples": int(examples),
                      "epochs": int(epochs)}
    try:
        private_dir((Path(root) / TIMINGS_FILE).parent)
        write_json(Path(root) / TIMINGS_FILE, timings)
    except OSError:
        pass


def plan_from_config(cfg: Any, n_train: int, root: str | os.PathLike = ".") -> GridPlan:
    """:func:`grid_plan` for a composed config (``selection.all_specs``,
    ``selection.retrain_seeds``, ``trainer.max_epochs``); each spec is refused as the select
    stage refuses it, with the key that defines it (``scores`` registered first: a spec may
    name one of them). The cartography stage runs
    :func:`~datamap.selection.specs.check_selection` before it writes anything."""
    from omegaconf import OmegaConf

    # not datamap.selection.specs: the train stage records its wall time with this module,
    # and every module imported here is a code dep of that stage
    from datamap.scoring.registry import register_configured
    from datamap.selection.ranking import spec_key

    register_configured(cfg.get("scores"))
    selection = cfg.selection
    definitions = OmegaConf.to_container(selection.all_specs, resolve=True)
    written = selection.get("specs") or {}
    keys = {name: spec_key(name, sweep=name not in written) for name in definitions}
    seeds = list(selection.get("retrain_seeds") or [0])
    epochs = int(cfg.trainer.max_epochs)
    return grid_plan(definitions, n_train, seeds, epochs, train_epochs=epochs,
                     timings=read_timings(root), root=root, keys=keys)

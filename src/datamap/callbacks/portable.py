"""Lightning checkpoints whose bytes do not depend on where the repository is checked out.

``ModelCheckpoint`` keeps absolute paths in its state (its directory, the best, k-th best and
last checkpoints), and every saved checkpoint carries that state. The train stage's persistent
``data/train/checkpoints`` is a DVC out, so absolute paths would give it another hash in every
clone (and ``dvc.lock`` would change after ``dvc repro`` in a fresh clone). This callback stores
those paths relative to the working directory (the repository root under DVC) and makes them
absolute again when a checkpoint is loaded to resume, before ``ModelCheckpoint`` reads them:
a checkpoint directory restored from DVC's cache in another clone then resumes there too.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl

from datamap.io import local_path, portable_path

#: The path-valued entries of ``ModelCheckpoint.state_dict()``.
PATH_KEYS = ("dirpath", "best_model_path", "kth_best_model_path", "last_model_path")


def _convert(state: Mapping[str, Any], convert: Callable[[str], str]) -> dict[str, Any]:
    """A copy of a ModelCheckpoint state with its paths converted (never the live dicts:
    ``best_k_models`` is the callback's own object)."""
    state = dict(state)
    for key in PATH_KEYS:
        if state.get(key):
            state[key] = convert(state[key])
    if isinstance(state.get("best_k_models"), Mapping):
        state["best_k_models"] = {convert(path): score
                                  for path, score in state["best_k_models"].items()}
    return state


def _model_checkpoint_states(trainer: pl.Trainer, checkpoint: dict[str, Any]) -> list[str]:
    """The keys under which the trainer's ModelCheckpoint callbacks (subclasses included) keep
    their states in a checkpoint's ``callbacks`` entry."""
    states = checkpoint.get("callbacks", {})
    return [callback.state_key for callback in trainer.checkpoint_callbacks
            if callback.state_key in states]


def intern_strings(value: Any) -> Any:
    """``value`` with every string of its dicts (keys and values) and lists replaced, in place,
    by its interned copy; other objects are returned as they are.

    Pickle writes an object once and refers back to it after, so two equal checkpoints pickle
    to different bytes when one reuses a string object (an optimizer's ``"step"`` key, created
    once by the run that computed it) and the other holds equal copies (the same key unpickled
    from the checkpoint a resumed run loaded). Interned, every equal string is one object in
    both runs, and a resumed run's checkpoints are byte-equal to an uninterrupted run's.
    """
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, dict):  # in place: keeps the dict's type, order and attributes
        items = [(intern_strings(key), intern_strings(item)) for key, item in value.items()]
        value.clear()
        value.update(items)
    elif isinstance(value, list):
        value[:] = [intern_strings(item) for item in value]
    return value


class PortableCheckpointPaths(pl.Callback):
    """Stores ``ModelCheckpoint``'s paths relative to the working directory (see the module),
    and interns the checkpoint's strings (:func:`intern_strings`): the same bytes after a
    resume."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        for key in _model_checkpoint_states(trainer, checkpoint):
            checkpoint["callbacks"][key] = _convert(checkpoint["callbacks"][key], portable_path)
        intern_strings(checkpoint)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        for key in _model_checkpoint_states(trainer, checkpoint):
            checkpoint["callbacks"][key] = _convert(checkpoint["callbacks"][key], local_path)

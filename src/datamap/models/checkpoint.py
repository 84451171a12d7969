"""Slim, deterministic model checkpoints (``model.ckpt``) and loading them back.

A Lightning checkpoint carries run-specific state (callback paths, optimizer moments, loop
timings) that makes identical training give different bytes. ``model.ckpt`` keeps only what
``Classifier.load_from_checkpoint`` needs, so DVC's cache sees identical runs as identical.

Every checkpoint is read with ``torch.load(weights_only=True)``: datamap writes only tensors and
plain values (the model's parts as descriptions, :mod:`datamap.models.factories`), so a file
holding anything else -- one planted to run code when unpickled -- is refused, not unpickled.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from datamap.errors import DataError

#: What model.ckpt keeps of a Lightning checkpoint: enough for ``load_from_checkpoint``, nothing
#: run-specific (paths, optimizer state, timings), so identical training gives identical bytes.
MODEL_KEYS = ("state_dict", "hyper_parameters", "epoch", "global_step",
              "pytorch-lightning_version")

#: The Classifier's constructor arguments, as its checkpoints' ``hyper_parameters`` hold them.
CLASSIFIER_ARGUMENTS = ("net", "optimizer", "scheduler", "input_shape", "num_classes",
                        "input_kind", "class_names")


def save_model(model: Any, path: str | os.PathLike, best_checkpoint: str | None = None) -> None:
    """Write a slim checkpoint of ``best_checkpoint``'s weights (a Lightning checkpoint file),
    or of ``model``'s current weights when there is none."""
    import pytorch_lightning as pl
    import torch

    if best_checkpoint:
        full = read_checkpoint(best_checkpoint)
    else:
        # the epoch that just ended, as ModelCheckpoint stores it (0-based)
        full = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "epoch": model.current_epoch, "global_step": model.global_step,
                "pytorch-lightning_version": pl.__version__}
    slim = {key: full[key] for key in MODEL_KEYS if key in full}
    slim["state_dict"] = {k: v.detach().cpu().contiguous() for k, v in slim["state_dict"].items()}
    torch.save(slim, path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A Lightning checkpoint file's dictionary, its tensors memory-mapped (for reading its
    epoch, step or callback states without reading every weight).

    A file that is not a readable checkpoint (truncated, corrupt, not a checkpoint at all) is
    a :class:`DataError` naming it."""
    import pickle

    import torch

    try:
        # weights_only: tensors and plain values only, so reading a checkpoint cannot run code
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        if not str(exc).startswith("Weights only load failed"):
            raise DataError(f"{path}: not a readable checkpoint (corrupt? "
                            f"{_first_sentence(exc)})") from exc
        raise DataError(f"{path}: holds Python objects, not only tensors and plain values (a "
                        "checkpoint from an older datamap, or not from datamap); datamap does "
                        "not unpickle them, since that can run code: retrain it (dvc repro) "
                        "or delete it") from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        # a truncated zip archive is an OSError (EINVAL) or a RuntimeError, by where it is cut
        raise DataError(f"{path}: not a readable checkpoint (truncated or corrupt? "
                        f"{_first_sentence(exc)})") from exc
    if not isinstance(state, dict) or "epoch" not in state:
        raise DataError(f"{path}: not a Lightning checkpoint (no epoch in it)")
    return state


def _first_sentence(exc: BaseException) -> str:
    return " ".join(str(exc).split()).split(". ")[0] or type(exc).__name__


def checkpoint_epoch(path: str | os.PathLike) -> int:
    """The (0-based) epoch after which the weights in ``path`` were saved."""
    return int(read_checkpoint(path)["epoch"])


def load_model(path: str | os.PathLike, trusted: Iterable[str] = ()) -> Any:
    """Load a ``model.ckpt`` written by :func:`save_model` onto the CPU, in eval mode.

    The model is rebuilt from the checkpoint's plain description of its parts (see
    :mod:`datamap.models.factories`): datamap's and torch's classes, and those named in
    ``trusted`` (the ``_target_`` paths of the run's own model config, see
    :func:`~datamap.models.factories.targets_of`). Its weights must fit that model exactly."""
    from datamap.models.classifier import Classifier
    from datamap.models.factories import as_factory

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: model checkpoint not found; run the train/retrain stage first")
    state = read_checkpoint(path)
    described = state.get("hyper_parameters")
    if not isinstance(described, Mapping) or not {"net", "optimizer"} <= set(described):
        raise DataError(f"{path}: no model description in it (hyper_parameters with net and "
                        "optimizer); not a model.ckpt written by datamap: retrain it (dvc repro)")
    arguments = {key: described[key] for key in CLASSIFIER_ARGUMENTS if key in described}
    for part in ("net", "optimizer", "scheduler"):
        arguments[part] = as_factory(described.get(part), part, str(path), tuple(trusted))
    model = Classifier(**arguments)
    try:
        model.load_state_dict(state["state_dict"])
    except (KeyError, RuntimeError) as exc:
        raise DataError(f"{path}: its weights do not fit the model it describes "
                        f"({_first_sentence(exc)}); retrain it (dvc repro)") from None
    return model.eval()

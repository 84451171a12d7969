"""Slim, deterministic model checkpoints (``model.ckpt``) and loading them back.

A Lightning checkpoint carries run-specific state (callback paths, optimizer moments, loop
timings) that makes identical training give different bytes. ``model.ckpt`` keeps only what
``Classifier.load_from_checkpoint`` needs, so DVC's cache sees identical runs as identical.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from datamap.errors import DataError

#: What model.ckpt keeps of a Lightning checkpoint: enough for ``load_from_checkpoint``, nothing
#: run-specific (paths, optimizer state, timings), so identical training gives identical bytes.
MODEL_KEYS = ("state_dict", "hyper_parameters", "epoch", "global_step",
              "pytorch-lightning_version")


def save_model(model: Any, path: str | os.PathLike, best_checkpoint: str | None = None) -> None:
    """Write a slim checkpoint of ``best_checkpoint``'s weights (a Lightning checkpoint file),
    or of ``model``'s current weights when there is none."""
    import pytorch_lightning as pl
    import torch

    if best_checkpoint:
        full = torch.load(best_checkpoint, map_location="cpu", weights_only=False)
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
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        # a truncated zip archive is an OSError (EINVAL) or a RuntimeError, by where it is cut
        reason = " ".join(str(exc).split()).split(". ")[0] or type(exc).__name__
        raise DataError(f"{path}: not a readable checkpoint (truncated or corrupt? "
                        f"{reason})") from exc
    if not isinstance(state, dict) or "epoch" not in state:
        raise DataError(f"{path}: not a Lightning checkpoint (no epoch in it)")
    return state


def checkpoint_epoch(path: str | os.PathLike) -> int:
    """The (0-based) epoch after which the weights in ``path`` were saved."""
    return int(read_checkpoint(path)["epoch"])


def load_model(path: str | os.PathLike) -> Any:
    """Load a ``model.ckpt`` written by :func:`save_model` onto the CPU, in eval mode."""
    from datamap.models.classifier import Classifier

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: model checkpoint not found; run the train/retrain stage first")
    model = Classifier.load_from_checkpoint(path, map_location="cpu", weights_only=False)
    return model.eval()

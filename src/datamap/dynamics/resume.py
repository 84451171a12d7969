"""Resuming a recording: completed epochs in part files, the checkpoint state, the RNG states.

Each completed epoch of each split is written once to a part file under ``parts_dir`` (the train
stage's persistent checkpoint directory), and the recorder's ``state_dict`` -- stored in every
Lightning checkpoint -- holds only the index: epochs completed per split, a run token tying the
part files to the run, the recording config and the global RNG states. Resuming reloads the
completed epochs from their parts; a partial epoch is discarded and redone. Without
``parts_dir`` the arrays themselves travel inside the checkpoint (fine for small data;
checkpoints then grow with every epoch and are rewritten in full at each save, which is why the
train stage uses part files).
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from datamap.errors import ConfigError, DataError
from datamap.io import portable_path

log = logging.getLogger(__name__)

#: Bumped when the checkpoint state or part-file layout changes.
STATE_FORMAT = 1
_HINT = "the checkpoint cannot be resumed: start afresh (resume: false)"

Part = dict[str, np.ndarray]  # one completed epoch of one split: column -> array


# ------------------------------------------------------------------------------------------------
# part files


def part_path(root: Path, split: str, epoch: int) -> Path:
    return root / split / f"epoch_{epoch:05d}.arrow"


def write_part(root: Path, split: str, epoch: int, part: Mapping[str, np.ndarray], token: str,
               config: Mapping[str, Any]) -> None:
    """One completed epoch of one split as an Arrow IPC file (uncompressed: written in well
    under a millisecond for small epochs, at disk speed for large ones), atomically."""
    path = part_path(root, split, epoch)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps({"token": token, "split": split, "epoch": epoch, "config": dict(config)},
                      sort_keys=True)
    arrays = {k: pa.array(v) for k, v in part.items() if k != "logits"}
    if "logits" in part:
        logits = part["logits"]
        arrays["logits"] = pa.FixedSizeListArray.from_arrays(
            pa.array(logits.reshape(-1)), logits.shape[1])
    table = pa.table(arrays).replace_schema_metadata({b"datamap_part": meta.encode()})
    tmp = path.with_name(f".{path.name}.tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(tmp, path)


def read_part(roots: Sequence[Path], split: str, epoch: int, token: str) -> Part:
    """The part of (split, epoch) from the first root that has it, checked to be ``token``'s."""
    paths = [part_path(root, split, epoch) for root in roots]
    path = next((p for p in paths if p.is_file()), paths[-1])
    if not path.is_file():
        raise DataError(f"{path}: the {split} dynamics of epoch {epoch} are missing (they are "
                        f"kept next to the checkpoint, under dynamics/); {_HINT}")
    try:
        with pa.OSFile(str(path), "rb") as source:
            table = pa.ipc.open_file(source).read_all()
        meta = json.loads((table.schema.metadata or {}).get(b"datamap_part", b"{}"))
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DataError(f"{path}: unreadable dynamics part ({exc}); {_HINT}") from exc
    if meta.get("token") != token or meta.get("epoch") != epoch or meta.get("split") != split:
        raise DataError(f"{path}: written by another run than the checkpoint's; {_HINT}")
    part = {name: table.column(name).to_numpy() for name in table.column_names
            if name != "logits"}
    if "logits" in table.column_names:
        logits = table.column("logits").combine_chunks()
        part["logits"] = logits.flatten().to_numpy().reshape(len(logits), -1)
    return part


def remove_parts(root: Path, split: str, first_epoch: int = 0) -> None:
    """Delete the parts of epochs >= ``first_epoch`` (an earlier run's, or a partial epoch)."""
    for path in (root / split).glob("epoch_*.arrow"):
        if int(path.stem.split("_")[1]) >= first_epoch:
            path.unlink()


# ------------------------------------------------------------------------------------------------
# checkpoint state


def checkpoint_state(*, token: str, config: Mapping[str, Any], done: Mapping[str, int],
                     parts_dir: Path | None, epochs: Mapping[str, list[Part]] | None
                     ) -> dict[str, Any]:
    """The recorder's ``state_dict``: the index of the completed epochs (``parts_dir``: where
    their part files are, relative to the working directory when below it), the RNG states,
    and -- given ``epochs`` (no part files) -- the epochs' arrays themselves."""
    state: dict[str, Any] = {
        "format": STATE_FORMAT,
        "token": token,
        "config": dict(config),
        "epochs": dict(done),
        "rng": rng_states(),
        # relative to the working directory when below it: the same bytes in every clone
        "parts_dir": portable_path(parts_dir) if parts_dir is not None else None,
    }
    if epochs is not None:
        state["arrays"] = {split: [{k: torch.from_numpy(np.ascontiguousarray(v))
                                    for k, v in part.items()} for part in parts]
                           for split, parts in epochs.items()}
    return state


def load_checkpoint_state(state: Mapping[str, Any]) -> None:
    """Check the state's format and restore the global RNG states it saved.

    Lightning restores neither the global RNGs nor, by itself, dropout's random stream. Restored
    here, they are where the uninterrupted run was when it saved the checkpoint once training
    resumes: nothing draws from them in between (the sanity check runs under isolate_rng, and the
    first draw is the resumed epoch's DataLoader iterator).
    """
    if state.get("format") != STATE_FORMAT:
        raise ConfigError(f"the checkpoint's dynamics state has an unknown format; {_HINT}")
    set_rng_states(state["rng"])


@dataclass
class Restored:
    """What a checkpoint state gives back: the run token, epochs done per split, and (on rank 0)
    the completed epochs' arrays."""

    token: str
    done: dict[str, int]
    epochs: dict[str, list[Part]] | None


def restore(state: Mapping[str, Any], config: Mapping[str, Any], splits: Sequence[str],
            parts_dir: Path | None, is_zero: bool) -> Restored:
    """The completed epochs of a checkpoint state, refusing one of another recording config.

    On rank 0 the epochs are read from the state's arrays or from the part files -- next to this
    run's checkpoints, else where the checkpoint's run wrote them -- and this run's part
    directory is brought in line: parts copied from elsewhere, parts of later (partial) epochs
    deleted, since those epochs are redone.
    """
    if dict(state["config"]) != dict(config):
        raise ConfigError(
            f"the checkpoint's dynamics were recorded with {dict(state['config'])} but this run "
            f"records {dict(config)}; resume with the same dynamics config or start afresh "
            "(resume: false)"
        )
    token = state["token"]
    done = {split: int(state["epochs"][split]) for split in splits}
    epochs = None
    if is_zero:
        if state.get("parts_dir") is None:
            epochs = {split: [{k: v.numpy() for k, v in part.items()}
                              for part in state["arrays"][split][: done[split]]]
                      for split in splits}
        else:
            roots = [p for p in (parts_dir, Path(state["parts_dir"])) if p is not None]
            epochs = {split: [read_part(roots, split, e, token) for e in range(done[split])]
                      for split in splits}
        if parts_dir is not None:
            for split in splits:
                for e, part in enumerate(epochs[split]):
                    if not part_path(parts_dir, split, e).is_file():
                        write_part(parts_dir, split, e, part, token, config)
                remove_parts(parts_dir, split, first_epoch=done[split])
    log.info("dynamics: resuming with %s recorded epoch(s)",
             ", ".join(f"{n} {s}" for s, n in done.items()))
    return Restored(token=token, done=done, epochs=epochs)


# ------------------------------------------------------------------------------------------------
# global RNG states


def rng_states() -> dict[str, Any]:
    """The global RNG states as bytes and plain values: cheap to save in every checkpoint and
    loadable with ``weights_only=True``."""
    np_name, np_keys, *np_rest = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state().numpy().tobytes(),
        "numpy": (np_name, np.asarray(np_keys, dtype=np.uint32).tobytes(), *np_rest),
        "python": (py_version, np.asarray(py_state, dtype=np.uint64).tobytes(), py_gauss),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = [s.numpy().tobytes() for s in torch.cuda.get_rng_state_all()]
    return states


def set_rng_states(states: Mapping[str, Any]) -> None:
    def as_tensor(raw: bytes) -> torch.Tensor:
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8)

    torch.set_rng_state(as_tensor(states["torch"]))
    np_name, np_keys, *np_rest = states["numpy"]
    np.random.set_state((np_name, np.frombuffer(np_keys, dtype=np.uint32).copy(), *np_rest))
    py_version, py_state, py_gauss = states["python"]
    random.setstate((py_version, tuple(int(v) for v in np.frombuffer(py_state, np.uint64)),
                     py_gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([as_tensor(raw) for raw in states["cuda"]])

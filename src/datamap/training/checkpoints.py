"""The train stage's persistent checkpoint directory: which configuration wrote it, whether its run
finished, and which checkpoint a resumed run continues from."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from datamap.errors import ConfigError
from datamap.io import write_json

log = logging.getLogger(__name__)


#: In a persistent checkpoint directory: which configuration wrote it and whether it finished.
RUN_FILE = "run.json"


def run_fingerprint(cfg: DictConfig, prepared_dir: str | os.PathLike,
                    train_ids: np.ndarray | None) -> str:
    """A hash of everything that determines the training run, for deciding whether a checkpoint
    may be resumed: seed, datamodule, model, trainer, dynamics, callbacks, the prepared data's
    ``meta.json`` and the training subset. A resumed run must give what an uninterrupted run of
    the same configuration gives, so any change means training afresh."""
    conf = {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(
        cfg.get(key)) else cfg.get(key)
        for key in ("seed", "model", "trainer", "dynamics", "callbacks")}
    conf["datamodule"] = OmegaConf.to_container(cfg.data.datamodule, resolve=True)
    digest = hashlib.sha256(json.dumps(conf, sort_keys=True, default=str).encode())
    meta = Path(prepared_dir) / "meta.json"
    if meta.is_file():
        digest.update(meta.read_bytes())
    if train_ids is not None:
        digest.update(np.ascontiguousarray(np.sort(np.asarray(train_ids, np.int64))).tobytes())
    return digest.hexdigest()


def _read_run(checkpoint_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((checkpoint_dir / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def resume_checkpoint(checkpoint_dir: Path, resume: bool | str | None,
                      fingerprint: str) -> str | None:
    """The checkpoint to resume from, or None to train afresh.

    ``resume`` False/None: afresh. True: ``checkpoint_dir/last.ckpt`` when it belongs to an
    unfinished run of the same configuration, else afresh (logged). A path: that checkpoint,
    which must exist and, when its directory says which configuration wrote it, match this one.
    """
    if resume is None or resume is False:
        return None
    if resume is True:
        last = checkpoint_dir / "last.ckpt"
        run = _read_run(checkpoint_dir)
        if not last.is_file():
            log.info("resume: no %s yet; training from scratch", last)
            return None
        if run.get("fingerprint") != fingerprint:
            log.warning("resume: %s was written by a different configuration (or its %s is "
                        "missing); training from scratch", last, RUN_FILE)
            return None
        if run.get("finished"):
            log.info("resume: the run in %s finished; training from scratch", checkpoint_dir)
            return None
        return str(last)
    path = Path(str(resume))
    if not path.is_file():
        raise ConfigError(f"resume={resume!r}: checkpoint not found; pass the path of a .ckpt "
                          "file, true (the last checkpoint of the train stage) or false")
    run = _read_run(path.parent)
    if run and run.get("fingerprint") != fingerprint:
        raise ConfigError(f"resume={resume!r}: the checkpoint was written with a different "
                          "configuration (see its run.json); resuming it would mix two runs")
    return str(path)


def prepare_checkpoint_dir(checkpoint_dir: Path, ckpt_path: str | None,
                            fingerprint: str) -> None:
    """Rank 0: clear the directory unless resuming from a checkpoint inside it; mark the run."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) != 0:
        return  # DDP ranks > 0 start inside trainer.fit, after rank 0 has done this
    inside = ckpt_path is not None and checkpoint_dir.resolve() in Path(ckpt_path).resolve().parents
    if not inside and checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)  # a fresh run must not see an earlier run's files
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    parts = Path(ckpt_path).parent / "dynamics" if ckpt_path is not None else None
    if not inside and parts is not None and parts.is_dir():
        # resuming a checkpoint kept elsewhere: its completed epochs' dynamics come along
        shutil.copytree(parts, checkpoint_dir / "dynamics")
    write_json(checkpoint_dir / RUN_FILE, {"fingerprint": fingerprint, "finished": False})

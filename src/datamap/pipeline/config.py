"""Compose ``conf/`` into ``params.yaml`` exactly as DVC does, and check that it is fresh.

DVC (``hydra.enabled``) writes params.yaml on ``dvc exp run`` with ``compose`` ->
``OmegaConf.resolve`` -> ``OmegaConf.to_yaml``; ``datamap compose`` does the same so that both
produce identical bytes and the freshness test can compare them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from datamap.errors import ConfigError, datamap_cause
from datamap.io import write_text


def compose(
    config_dir: str | os.PathLike = "conf",
    config_name: str = "config",
    overrides: Sequence[str] = (),
) -> DictConfig:
    """Compose the Hydra config tree under ``config_dir`` with ``overrides`` and resolve it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    config_dir = Path(config_dir).resolve()
    if not (config_dir / f"{config_name}.yaml").is_file():
        raise ConfigError(f"{config_dir}/{config_name}.yaml not found; run from the project root")
    try:
        # version_base=None as DVC uses, so both compose the same tree the same way.
        with initialize_config_dir(str(config_dir), version_base=None):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        cause = datamap_cause(exc)  # raised by a datamap resolver (selection.all_specs)
        if cause is not None:
            raise cause from None
        raise ConfigError(f"cannot compose {config_dir}: {exc}".replace("\n", " ")) from exc
    return cfg


def params_text(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)


def write_params(
    output: str | os.PathLike = "params.yaml",
    config_dir: str | os.PathLike = "conf",
    overrides: Sequence[str] = (),
) -> Path:
    """Write the composed config to ``output`` (atomically) and return its path."""
    write_text(output, params_text(compose(config_dir, overrides=overrides)))
    return Path(output)


def stale_params(
    params: str | os.PathLike = "params.yaml", config_dir: str | os.PathLike = "conf"
) -> str | None:
    """Return a message when ``params`` differs from a fresh composition of ``config_dir``."""
    params = Path(params)
    expected = params_text(compose(config_dir))
    if not params.is_file():
        return f"{params} is missing; run `datamap compose`"
    if params.read_text(encoding="utf-8") != expected:
        return f"{params} is stale against {config_dir}/; run `datamap compose` to regenerate it"
    return None


# --------------------------------------------------------------------------------------------
# overrides that outlive a recomposition

#: Where ``datamap compose OVERRIDES`` notes what its overrides changed (git-ignored).
COMPOSE_NOTE = Path(".datamap") / "compose.json"
#: An experiment's name: a file name and a Hydra option.
EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_leaves(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def changed_keys(config_dir: str | os.PathLike, overrides: Sequence[str]) -> dict[str, list]:
    """Each leaf key the overrides change: ``{key: [without, with]}`` (JSON values; a key the
    overrides add or remove has ``None`` on the other side)."""
    plain = _leaves(OmegaConf.to_container(compose(config_dir)))
    composed = _leaves(OmegaConf.to_container(compose(config_dir, overrides=overrides)))
    return {key: [plain.get(key), composed.get(key)] for key in sorted(set(plain) | set(composed))
            if plain.get(key) != composed.get(key)}


def write_compose_note(root: str | os.PathLike, config_dir: str | os.PathLike,
                       overrides: Sequence[str]) -> None:
    """Note what ``overrides`` change (or remove the note when there are none)."""
    from datamap.io import private_dir, write_json

    note = Path(root) / COMPOSE_NOTE
    if not overrides:
        note.unlink(missing_ok=True)
        return
    private_dir(note.parent)  # .datamap: 0700 whatever the umask (the token store needs it)
    write_json(note, {"overrides": list(overrides),
                      "changed": changed_keys(config_dir, overrides)})


def check_overrides_kept(cfg: DictConfig, root: str | os.PathLike | None = None) -> None:
    """Refuse a configuration that ``dvc exp run`` recomposed from ``conf/`` without the
    overrides given to ``datamap compose`` (it composes ``conf/`` alone, plus its ``-S``): the
    run would silently be another one -- the built-in dataset instead of the user's files.

    The check compares the keys the overrides changed (:data:`COMPOSE_NOTE`): when none of
    them holds the value the overrides gave it, they were dropped (a ``-S`` of one of those keys
    changes one, not all). Runs only inside ``dvc exp run`` (which
    sets ``DVC_EXP_BASELINE_REV``, and ``DVC_ROOT`` to the workspace a queued run came from);
    ``dvc repro`` reads params.yaml as written."""
    import json

    if not os.environ.get("DVC_EXP_BASELINE_REV"):
        return
    note = Path(root if root is not None else os.environ.get("DVC_ROOT") or ".") / COMPOSE_NOTE
    try:
        recorded = json.loads(note.read_text(encoding="utf-8"))
        changed, overrides = dict(recorded["changed"]), list(recorded["overrides"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    if not changed:
        return
    current = _leaves(OmegaConf.to_container(cfg, resolve=True))
    if not any(current.get(key) == composed for key, (_, composed) in changed.items()):
        shown = " ".join(overrides)
        raise ConfigError(
            f"params.yaml was recomposed from conf/ by `dvc exp run`, which drops the overrides "
            f"given to `datamap compose` ({shown}); save them as an experiment, `datamap "
            f"compose --save NAME {shown}`, and run `dvc exp run -S experiment=NAME ...` (or "
            f"delete {COMPOSE_NOTE} to run on conf/ alone)"
        )


def save_experiment(name: str, overrides: Sequence[str], config_dir: str | os.PathLike = "conf",
                    force: bool = False) -> Path:
    """Write ``overrides`` as the experiment ``conf/experiment/NAME.yaml`` (a group override
    such as ``data=table`` becomes ``override /data: table`` in its defaults list) and return
    its path. The experiment composes to what ``overrides`` compose to (checked before it is
    written), and unlike ``params.yaml`` it survives ``dvc exp run``'s recomposition."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not EXPERIMENT_NAME.fullmatch(name):
        raise ConfigError(f"--save {name!r}: an experiment name holds letters, digits, _ and - "
                          "only (it names conf/experiment/NAME.yaml)")
    config_dir = Path(config_dir)
    path = config_dir / "experiment" / f"{name}.yaml"
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; pick another name, or add --force to replace it")
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as exc:  # Hydra's own grammar errors
        raise ConfigError(f"cannot parse the overrides: {exc}".replace("\n", " ")) from None
    defaults: list[dict[str, Any]] = []
    values = OmegaConf.create({})
    for override in parsed:
        key = override.key_or_group
        text = override.input_line
        if override.is_sweep_override() or override.is_delete() or override.package:
            raise ConfigError(f"{text}: a saved experiment holds plain values and config "
                              "options (key=value, group=option); give sweeps to -m or "
                              "`dvc exp run --queue -S`")
        if key == "experiment":
            raise ConfigError(f"{text}: an experiment cannot include another; list its "
                              "overrides instead")
        if (config_dir / key).is_dir() and "." not in key:
            defaults.append({f"override /{key}": override.value()})
        else:
            OmegaConf.update(values, key, override.value(), force_add=True)
    body = OmegaConf.to_container(values)
    document = ({"defaults": defaults} if defaults else {}) | body
    text = ("# @package _global_\n"
            f"# Saved by `datamap compose --save {name}`: compose it with experiment={name}\n"
            f"# (dvc exp run -S experiment={name} -S ... runs experiments on it).\n"
            + OmegaConf.to_yaml(OmegaConf.create(document)))
    expected = params_text(compose(config_dir, overrides=overrides))
    write_text(path, text)
    try:
        got = params_text(compose(config_dir, overrides=[f"experiment={name}"]))
    except Exception:
        path.unlink(missing_ok=True)
        raise
    if got != expected:
        path.unlink(missing_ok=True)
        raise ConfigError(f"--save {name}: the overrides cannot be written as an experiment "
                          "that composes to the same config; write conf/experiment/"
                          f"{name}.yaml by hand")
    return path

"""Compose ``conf/`` into ``params.yaml`` exactly as DVC does, and check that it is fresh.

DVC (``hydra.enabled``) writes params.yaml on ``dvc exp run`` with ``compose`` ->
``OmegaConf.resolve`` -> ``OmegaConf.to_yaml``; ``datamap compose`` does the same so that both
produce identical bytes and the freshness test can compare them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

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

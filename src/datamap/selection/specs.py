"""Every selection spec the pipeline runs: the hand-written ones and a sweep's grid, by name.

``selection.sweep`` is a grid of criteria and fractions::

    sweep: {regions: [ambiguous, hard_to_learn, easy_to_learn, random], fractions: [0.1, 0.25]}

Each (criterion, fraction) becomes the spec ``{criterion: fraction}`` named
``<criterion>_<percent>`` -- ``ambiguous_10``, ``hard_25`` (``hard_to_learn`` and
``easy_to_learn`` are shortened to ``hard`` and ``easy``, the names the hand-written specs use),
``aum_12p5`` for 0.125 (a point in a percent is written ``p``). :func:`all_specs` merges them
after the hand-written ``selection.specs``: a sweep entry whose name is taken by a hand-written
spec of the same definition is that spec; of another definition, it is refused.

The merge is the OmegaConf resolver ``datamap.all_specs`` (see ``conf/selection/default.yaml``):
the composed ``params.yaml`` holds ``selection.all_specs`` written out, so the DVC ``foreach``
stages iterate over it and each stage depends on its own entry only -- a changed fraction
reruns only the stages of the spec it names. Hydra imports ``hydra_plugins/datamap_resolvers``
whenever it starts (DVC's composition on ``dvc exp run`` included), which registers it.

This module imports nothing heavy: it runs inside every Hydra start-up.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from datamap.data.options import as_list, flag, seed_list, seed_value
from datamap.errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig

#: The resolver's name in ``${datamap.all_specs:${selection.specs},${selection.sweep}}``.
RESOLVER = "datamap.all_specs"
#: Short names of the regions in sweep spec names.
SHORT_NAMES = {"hard_to_learn": "hard", "easy_to_learn": "easy"}
#: A spec name must be usable as a DVC stage key, a directory and a Hydra key.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_TOLERANCE = 1e-9


def _plain(node: Any) -> Any:
    """An OmegaConf node as plain Python containers (anything else as it is)."""
    try:
        from omegaconf import OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return node
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def percent_text(fraction: float) -> str:
    """0.25 -> ``25``, 0.125 -> ``12p5``, 1.0 -> ``100``."""
    return f"{round(fraction * 100, 6):g}".replace(".", "p")


def sweep_name(criterion: str, fraction: float) -> str:
    """The name of the sweep spec ``{criterion: fraction}``: ``hard_25``."""
    return f"{SHORT_NAMES.get(criterion, criterion)}_{percent_text(fraction)}"


def sweep_specs(sweep: Mapping[str, Any] | None) -> dict[str, dict[str, float]]:
    """The sweep's grid as named specs, regions outermost, in the order written."""
    sweep = _plain(sweep)
    if sweep is None:
        return {}
    if not isinstance(sweep, Mapping):
        raise ConfigError(f"selection.sweep must map regions and fractions to lists, e.g. "
                            f"{{regions: [ambiguous], fractions: [0.1, 0.25]}}, got {sweep!r}")
    unknown = sorted(set(sweep) - {"regions", "fractions"})
    if unknown:
        raise ConfigError(f"selection.sweep.{unknown[0]}: unknown key; a sweep has regions "
                            "and fractions")
    regions = _list(sweep.get("regions"), "regions")
    fractions = _list(sweep.get("fractions"), "fractions")
    for region in regions:
        if not isinstance(region, str) or not NAME_PATTERN.fullmatch(region):
            raise ConfigError(f"selection.sweep.regions: {region!r} is not a criterion name "
                                "such as ambiguous, hard_to_learn, easy_to_learn or random")
    for fraction in fractions:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
                or not math.isfinite(fraction) or not 0 < fraction <= 1:
            raise ConfigError(f"selection.sweep.fractions: {fraction!r} is not a fraction in "
                                "(0, 1]")
    for key, values in (("regions", regions), ("fractions", list(map(float, fractions)))):
        twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if twice is not None:
            raise ConfigError(f"selection.sweep.{key} lists {twice!r} twice; list it once")
    grid: dict[str, dict[str, float]] = {}
    for region in regions:
        for fraction in map(float, fractions):
            name = sweep_name(region, fraction)
            if name in grid:  # two grid points, one name: one spec would silently replace the other
                ((first, earlier),) = grid[name].items()
                raise ConfigError(
                    f"selection.sweep: {first} at {earlier!r} and {region} at {fraction!r} both "
                    f"get the spec name {name} (a name shows the percent to 6 significant "
                    "digits); drop one of them from selection.sweep"
                )
            grid[name] = {region: fraction}
    return grid


def _list(value: Any, key: str) -> list:
    # the rule of every list option: a single value is a list of one (datamap.data.options)
    return as_list(value, f"selection.sweep.{key}") or []


def _same_definition(a: Any, b: Mapping[str, float]) -> bool:
    if not isinstance(a, Mapping) or set(map(str, a)) != set(b):
        return False
    return all(isinstance(a[k], (int, float)) and not isinstance(a[k], bool)
               and abs(float(a[k]) - v) <= _TOLERANCE for k, v in b.items())


def all_specs(specs: Mapping[str, Any] | None, sweep: Mapping[str, Any] | None) -> dict:
    """The hand-written ``specs`` (in order), then the sweep's specs not already among them.

    Refuses a spec name that cannot name a stage or a directory, and a sweep spec whose name a
    hand-written spec of another definition has taken.
    """
    specs = _plain(specs) or {}
    if not isinstance(specs, Mapping):
        raise ConfigError(f"selection.specs must map spec names to specs, got {specs!r}")
    for name in specs:
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise ConfigError(f"selection.specs.{name}: a spec name may hold letters, digits, "
                                "_ and - only (it names DVC stages and directories)")
    merged = dict(specs)
    for name, spec in sweep_specs(sweep).items():
        if name not in merged:
            merged[name] = spec
        elif not _same_definition(merged[name], spec):
            ((criterion, fraction),) = spec.items()
            raise ConfigError(
                f"selection.sweep: {criterion} at {fraction:g} is named {name}, but "
                f"selection.specs.{name} is {merged[name]}; rename that spec or drop {fraction:g} "
                "from selection.sweep.fractions"
            )
    return merged


def _resolve_all_specs(specs: Any, sweep: Any) -> Any:
    from omegaconf import OmegaConf

    # a DictConfig, not a dict: OmegaConf.resolve (DVC's composition) writes a container only
    # into a value node when the resolver returns one
    return OmegaConf.create(all_specs(specs, sweep))


def register_resolvers() -> None:
    """Register :data:`RESOLVER` with OmegaConf (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, _resolve_all_specs)


# --------------------------------------------------------------------------------------------
# the specs a stage runs


def selected_spec_names(cfg: DictConfig) -> list[str]:
    """The names of the selection specs a per-subset stage processes.

    ``+spec=NAME`` (what dvc.yaml passes) picks one of ``selection.all_specs`` (the hand-written
    specs and the sweep's); without it, every one, in order.
    """
    specs = cfg.get("selection", {}).get("all_specs") or {}
    if not specs:
        raise ConfigError("selection.specs and selection.sweep are empty; define at least one "
                          "selection spec")
    name = cfg.get("spec")
    if name is None:
        return list(specs)
    if name not in specs:
        raise ConfigError(
            f"spec={name!r} is not in selection.specs or the sweep ({', '.join(specs)}); add it "
            "to conf/selection/ or pick an existing one"
        )
    return [str(name)]


#: Every key of the ``selection`` config group (a misspelt key is refused, never ignored).
SELECTION_KEYS = ("specs", "sweep", "stratify", "retrain_seeds", "retrain_media", "baseline",
                  "all_specs")


def check_selection(cfg: DictConfig, root: str | os.PathLike | None = None) -> None:
    """Check every key of ``selection`` at once, before anything is selected or retrained: a
    misspelt key, a baseline that names no spec, seeds that are not distinct integers, a flag
    that is not true or false, and every spec's definition (:func:`check_spec`). The select
    stage runs it, so a grid is never retrained for a report that cannot be written.

    With the repository ``root``, an ``ids_file`` spec's path is checked too (under
    ``data/selections/``, a CSV or Parquet file) and the file, when it is there already, read
    (the cartography stage counts it in its plan; it may still be written before select)."""
    from omegaconf import OmegaConf

    selection = cfg.get("selection")
    if selection is None:
        raise ConfigError("selection is not set; add a selection group (conf/selection/)")
    unknown = sorted(set(map(str, selection)) - set(SELECTION_KEYS))
    if unknown:
        raise ConfigError(f"selection.{unknown[0]}: unknown key; the selection keys are "
                          f"{', '.join(SELECTION_KEYS)}")
    specs = selection.get("all_specs") or {}
    if not specs:
        raise ConfigError("selection.specs and selection.sweep are empty; define at least one "
                          "selection spec")
    baseline = selection.get("baseline")
    if baseline is not None and (not isinstance(baseline, str) or baseline not in specs):
        raise ConfigError(f"selection.baseline={baseline!r} is not a selection spec "
                          f"({', '.join(specs)}); name one of them, or null for no baseline")
    seed_list(selection.get("retrain_seeds"), "selection.retrain_seeds")
    for key in ("stratify", "retrain_media"):
        flag(selection.get(key, False), f"selection.{key}")
    for name in specs:
        check_spec(name, OmegaConf.to_container(specs[name], resolve=True),
                   sweep=name not in (selection.get("specs") or {}), root=root)


def check_spec(name: str, spec: Any, sweep: bool = False,
               root: str | os.PathLike | None = None) -> None:
    """Check one spec's definition (its criteria and fractions; or, given the repository
    ``root``, its file of ids: its path, and the file when it exists) without reading any
    scores."""
    from datamap.selection.ranking import (
        IDS_FILE,
        ids_file_key,
        ids_file_path,
        parse_spec,
        read_ids_file,
        spec_key,
    )

    if isinstance(spec, Mapping) and list(spec) == [IDS_FILE]:
        if root is not None:
            path = ids_file_path(name, spec, root)
            if path.is_file():
                read_ids_file(path, ids_file_key(name))
        return
    parse_spec(name, spec, key=spec_key(name, sweep=sweep))


def spec_definition(cfg: DictConfig, name: str) -> dict:
    """The definition of spec ``name`` (from ``selection.all_specs``) as a plain dict."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg.selection.all_specs[name], resolve=True)


def write_configured_subset(cfg: DictConfig, spec: str, cartography_dir: Any, prepared_dir: Any,
                            out_dir: Any, root: Any) -> dict:
    """Select spec ``spec`` of the config (after :func:`check_selection`) from the scores in
    ``cartography_dir`` and write its subset into ``out_dir`` (``root``: the repository, which
    files of ids are relative to)."""
    from pathlib import Path

    from datamap.selection.ranking import spec_key, write_subset

    return write_subset(
        Path(cartography_dir) / "scores.parquet", prepared_dir, out_dir, spec,
        spec_definition(cfg, spec), seed=seed_value(cfg.seed), root=root,
        stratify=flag(cfg.selection.get("stratify", False), "selection.stratify"),
        key=spec_key(spec, sweep=spec not in (cfg.selection.get("specs") or {})),
    )

"""A classifier's parts as plain data, so its checkpoints never hold code.

A :class:`~datamap.models.Classifier` is built from partial constructors (``_partial_: true``
in config): its backbone, optimizer and LR scheduler. Its checkpoints describe each one as
plain values -- ``{"_target_": "datamap.models.backbones.MLP", "_partial_": True, "hidden":
[128], ...}`` -- instead of pickling the constructor. Every checkpoint datamap writes is then
tensors and plain values, loaded with ``torch.load(weights_only=True)``: reading a checkpoint,
even one someone else planted, cannot run code.

Rebuilding a model from its description imports and calls what it names, so only trusted
constructors are rebuilt: a backbone must be an ``nn.Module``, an optimizer a
``torch.optim.Optimizer``, a scheduler a ``torch.optim.lr_scheduler.LRScheduler``, each defined
under a trusted module (``datamap.models``, ``torch.optim``) or named by the caller (the
constructors of the run's own configuration, which the user wrote).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from datamap.errors import ConfigError, DataError

#: Modules whose classes any checkpoint may be rebuilt from: datamap's and torch's own.
TRUSTED_MODULES = ("datamap.models", "torch.optim")

#: What each part of a classifier must be, by its argument name.
PART_BASES = {
    "net": ("torch.nn", "Module"),
    "optimizer": ("torch.optim", "Optimizer"),
    "scheduler": ("torch.optim.lr_scheduler", "LRScheduler"),
}

_PLAIN_SCALARS = (str, int, float, bool, type(None))


def _plain(value: Any, where: str) -> Any:
    """``value`` as plain lists, dicts and scalars (OmegaConf containers converted), or a
    :class:`ConfigError` naming the argument that is not plain data."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, _PLAIN_SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, Mapping) and all(isinstance(key, str) for key in value):
        return {key: _plain(item, f"{where}.{key}") for key, item in value.items()}
    raise ConfigError(f"{where}: a {type(value).__name__}, which a checkpoint cannot hold as "
                      "plain data; give numbers, strings, lists or mappings (a constructor "
                      "builds any object it needs from them)")


def target_name(factory: Callable[..., Any]) -> str:
    """The import path of the class or function behind ``factory`` (a partial or a class)."""
    func = getattr(factory, "func", factory)
    return f"{func.__module__}.{func.__qualname__}"


def describe(factory: Callable[..., Any] | Mapping[str, Any] | None,
             part: str) -> dict[str, Any] | None:
    """``factory`` (a ``functools.partial`` of a class, or a class) as a plain description
    ``{"_target_": ..., "_partial_": True, **keyword arguments}``; a description stays as it
    is. ``part`` (``net``, ``optimizer``, ``scheduler``) names it in errors."""
    if factory is None:
        return None
    if isinstance(factory, Mapping):
        return _plain(factory, f"model.{part}")
    if isinstance(factory, functools.partial) and factory.args:
        raise ConfigError(f"model.{part}: positional arguments cannot be described as plain "
                          "data; give them by name")
    if not isinstance(factory, (functools.partial, type)):
        raise ConfigError(f"model.{part}: {factory!r} is not a class or a partial of one "
                          "(_partial_: true in config)")
    keywords = getattr(factory, "keywords", {}) or {}
    return {"_target_": target_name(factory), "_partial_": True,
            **_plain(dict(keywords), f"model.{part}")}


def targets_of(config: Any) -> set[str]:
    """Every ``_target_`` named anywhere in ``config`` (a model config, dict or DictConfig)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(config, (DictConfig, ListConfig)):
        config = OmegaConf.to_container(config, resolve=False)
    found: set[str] = set()
    if isinstance(config, Mapping):
        if isinstance(config.get("_target_"), str):
            found.add(config["_target_"])
        for value in config.values():
            found |= targets_of(value)
    elif isinstance(config, (list, tuple)):
        for value in config:
            found |= targets_of(value)
    return found


def _locate(target: str) -> Any:
    """The object at the dotted path ``target`` (``package.module.Name``), or None."""
    from hydra.utils import get_object

    try:
        return get_object(target)
    except (ImportError, AttributeError, ValueError):
        return None


def _trusted(target: str, trusted: tuple[str, ...]) -> bool:
    """Whether ``target`` is under a trusted module or is one of ``trusted`` -- by the name a
    config gives (``mypkg.Net``) or the name of what that name imports (``mypkg.nets.Net``);
    only names from ``trusted`` (the user's own config) are imported to find out."""
    def under(name: str, prefixes: Iterable[str]) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    if under(target, (*TRUSTED_MODULES, *trusted)):
        return True
    canonical = set()
    for name in trusted:
        obj = _locate(name)
        if obj is not None and hasattr(obj, "__qualname__"):
            canonical.add(target_name(obj))
    return target in canonical


def rebuild(description: Mapping[str, Any], part: str, source: str,
            trusted: Iterable[str] = ()) -> functools.partial:
    """The partial constructor a :func:`describe` description stands for.

    Checked before anything is imported or called: the target is under a trusted module or
    among ``trusted`` (dotted paths of classes, or of modules); after import it must be a class
    of the kind ``part`` needs (:data:`PART_BASES`); the arguments must be plain data.
    ``source`` (the checkpoint) names the input in errors."""
    trusted = tuple(trusted)
    target = description.get("_target_") if isinstance(description, Mapping) else None
    if not isinstance(target, str) or description.get("_partial_") is not True:
        raise DataError(f"{source}: its model.{part} is not a constructor description "
                        "(written by an older datamap, or not by datamap); retrain it "
                        "(dvc repro)")
    if not _trusted(target, trusted):
        raise DataError(f"{source}: its model.{part} is {target}, which is neither datamap's "
                        "nor torch's nor named by this run's model config, so it is not "
                        "imported; if you trust it, name it in the config (model.*._target_) "
                        "or with --trust")
    base_module, base_name = PART_BASES[part]
    base = getattr(importlib.import_module(base_module), base_name)
    obj = _locate(target)
    if not (isinstance(obj, type) and issubclass(obj, base)):
        found = "nothing" if obj is None else f"a {type(obj).__name__}"
        raise DataError(f"{source}: its model.{part} names {target}, which is {found}, not a "
                        f"{base_module}.{base_name}; retrain it (dvc repro)")
    arguments = {key: value for key, value in description.items()
                 if key not in ("_target_", "_partial_")}
    try:
        arguments = _plain(arguments, f"model.{part}")
    except ConfigError as exc:
        raise DataError(f"{source}: {exc}") from None
    return functools.partial(obj, **arguments)


def as_factory(part_value: Callable[..., Any] | Mapping[str, Any] | None, part: str,
               source: str = "the checkpoint",
               trusted: Iterable[str] = ()) -> Callable[..., Any] | None:
    """A constructor as given (a partial or class), or rebuilt from its description."""
    if part_value is None or not isinstance(part_value, Mapping):
        return part_value
    return rebuild(part_value, part, source, trusted)

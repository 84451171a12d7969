"""One reading of list-typed and column-name options, however they were typed.

On the command line ``data.source.drop_labels=xx`` gives the string ``xx`` where a list is
meant, and a string is itself a sequence (of characters). The rule, for every list option
(``text_columns``, ``feature_columns``, ``classes``, ``drop_labels``, ``selection.retrain_seeds``,
``selection.sweep.regions`` / ``fractions``, ...):

* a list (YAML, ``[a,b]`` on the command line, a Python list or tuple) is that list;
* ``null`` is "not set" (the option's default);
* a single scalar -- a string, a number, a boolean -- is the list of that one value:
  ``drop_labels=xx`` is ``drop_labels=[xx]``;
* a mapping is refused.

A column name is a string, matched exactly (case and spaces count); an integer is its decimal
form (YAML reads ``feature_columns: [0, 1]`` as integers, a CSV header gives the strings).
Anything else, an empty name or a name listed twice is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from datamap.errors import ConfigError


def plain(value: Any) -> Any:
    """OmegaConf containers (what ``hydra.utils.instantiate`` passes) as Python lists and
    dicts; any other value as it is."""
    try:
        from omegaconf import OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return value
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def as_list(value: Any, key: str) -> list | None:
    """A list option's value as a list (see the module docstring); None when unset.

    Parameters
    ----------
    value : Any
        The option as configured: a list, a scalar, or None.
    key : str
        The config key, for messages (``data.source.drop_labels``).

    Returns
    -------
    list or None

    Raises
    ------
    ConfigError
        For a mapping.
    """
    value = plain(value)
    if value is None:
        return None
    if isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a list (e.g. {key.rsplit('.', 1)[-1]}=[a,b]), got the "
                          f"mapping {value!r}")
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return [value]
    return list(value)


def column_name(value: Any, key: str) -> str | None:
    """One column name (see the module docstring) from ``value`` as configured, or None when
    unset; a :class:`ConfigError` naming ``key`` for a value that cannot name a column."""
    value = plain(value)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ConfigError(f"{key} must name one column, got {value!r}")
    if not value.strip():
        raise ConfigError(f"{key} must name a column, got the empty name {value!r}")
    return value


def column_names(value: Any, key: str) -> list[str] | None:
    """A list of column names (a single name is a list of one); None when unset.

    Parameters
    ----------
    value : Any
        The option as configured.
    key : str
        The config key, for messages.

    Returns
    -------
    list[str] or None

    Raises
    ------
    ConfigError
        For a value that cannot name a column, or a column listed twice.
    """
    values = as_list(value, key)
    if values is None:
        return None
    names = []
    for item in values:
        name = column_name(item, key)
        if name in names:
            raise ConfigError(f"{key} lists the column {name!r} twice")
        names.append(name)
    return names


#: Seeds are in [0, SEED_LIMIT): the range numpy's legacy seeding and scikit-learn's
#: ``random_state`` take (a negative seed is refused there, with advice about something else).
SEED_LIMIT = 2**32


def _is_seed(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < SEED_LIMIT


def seed_value(value: Any, key: str = "seed") -> int:
    """One seed: an integer (never a boolean; ``1.5`` or ``"abc"`` is no seed) in
    [0, 2**32); a :class:`ConfigError` naming ``key`` otherwise."""
    value = plain(value)
    if not _is_seed(value):
        raise ConfigError(f"{key} must be an integer in [0, 2**32), e.g. {key}=0, got {value!r}")
    return value


def seed_list(value: Any, key: str) -> list[int]:
    """A list of distinct integer seeds (a single seed is a list of one), each as
    :func:`seed_value` takes it.

    Raises
    ------
    ConfigError
        For an empty list, a value that is not an integer in [0, 2**32) (a boolean, ``1.5``,
        ``"0"``, ``-1``) or a seed listed twice.
    """
    seeds = as_list(value, key)
    if not seeds or not all(_is_seed(s) for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"{key} must be a list of distinct integer seeds in [0, 2**32), "
                          f"e.g. [0, 1, 2], got {seeds if seeds is not None else value!r}")
    return seeds


def flag(value: Any, key: str) -> bool:
    """A true/false option: a boolean, nothing else (``"no"`` or ``0`` would be read one way by
    Python and another by the user)."""
    value = plain(value)
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    return value

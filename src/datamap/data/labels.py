"""One reading of every label and id value, whatever the file format or config type.

The same class must come out of a CSV cell ``1.0``, a Parquet float ``1.0``, a JSON integer
``1`` and a command-line ``data.source.classes=[1]``; every value that could be read two ways is
either normalised by the rules below or refused. The rules (``docs/own-data.md`` quotes them):

**Labels are class names** (strings). :func:`canonical_label` turns one value into its name:

* missing -- ``None``, a float NaN, pandas' ``NA`` and ``NaT`` (a nullable Parquet column's
  null), an empty or blank string -- is ``""`` (the caller decides: a missing label is an
  error unless ``drop_labels`` lists ``""``);
* a string is stripped of surrounding whitespace and put in Unicode NFC form; a string holding
  a control character or a line break (a newline, a tab, U+2028, ...) is refused;
* a boolean, or a string reading ``true``/``false`` in any case, is ``true``/``false``;
* a number -- an integer, a float, or a string in decimal notation (``[+-]digits[.digits]`` with
  an optional exponent, ASCII digits only: ``7``, ``+7``, ``7.0``, ``0.7e1``, `` 7 ``) -- whose
  value is an integer is that integer's decimal form, so ``1``, ``1.0``, ``"1.0"`` and ``"01"``
  are all the class ``1``. A number that is not an integer (``0.5``), not finite (a float
  infinity), too large to name a class exactly (10**18 or more; a float beyond 2**53, or
  2**24 for float32, where it cannot hold every integer) is refused: a class is a name, not a
  measurement;
* anything else (a list, a mapping, bytes, a date) is refused.

``nan``, ``NA``, ``null``, ``inf`` written as text are class names like any other text: only
the formats' own missing values are missing.

**One kind per column**: after :func:`canonical_label`, a column whose labels are partly
numbers and partly other text (``0``, ``1``, ``unknown``) is refused (:func:`check_one_kind`):
such a column is most often a stray value, and it is where ``1.0`` could be meant as text.
Values listed in ``drop_labels`` are removed first, so SNLI's ``-`` beside numeric labels is
fine. The same holds for ``data.source.classes``.

**Ids are integers.** :func:`canonical_ids` reads an id column: integers as they are; a float
or a decimal string whose value is an integer (``7.0``, ``"7"``, ``"7.0"``) is that integer;
everything else -- a non-integral or non-finite number, text, a boolean, a missing value, a
value outside int64 -- is refused. The limit is int64's in every format: a 19-digit id such as
``1234567890123456789`` is an id in a CSV cell as in a Parquet integer column.
"""

from __future__ import annotations

import decimal
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from datamap.errors import ConfigError, DataError

#: A number written in decimal notation, ASCII digits only (``\d`` would take other scripts').
NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
#: A class name that is a number, after :func:`canonical_label`.
INTEGER_NAME = re.compile(r"-?(?:0|[1-9][0-9]*)")
BOOLEANS = {"true": "true", "false": "false"}
#: Integral numbers at or above this magnitude are refused as class names.
LARGEST_LABEL = 10**18
#: C0 and C1 control characters, and the Unicode line and paragraph separators (U+2028,
#: U+2029), which split a line as a newline does.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_INT64 = (-(2**63), 2**63 - 1)
#: A decimal string at or beyond this magnitude is refused before it is turned into an int:
#: no label or id is this large, and ``"1e999999999"`` would take a long time to expand.
_BEYOND_INT64 = 2**64


def _float_limit(value: Any) -> int:
    """The magnitude below which a float of ``value``'s type holds every integer exactly."""
    if isinstance(value, np.floating):
        return 2 ** (np.finfo(type(value)).nmant + 1)
    return 2**53


def _integral_number(value: Any) -> int:
    """The integer a number (int, float, or decimal string) denotes; ValueError with the reason
    when it denotes none exactly."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if not np.isfinite(number):
            raise ValueError("is not a finite number")
        if not number.is_integer():
            raise ValueError("is not an integer")
        if abs(number) >= _float_limit(value):
            raise ValueError(f"is a float at or beyond {_float_limit(value):.3g}, where floats "
                             "skip integers; store it as an integer or as text")
        return int(number)
    exact = decimal.Decimal(value)  # a string that matched NUMBER: exact, never rounded
    if exact.is_zero():
        return 0
    # the callers apply their own limits (labels below 10**18, ids in int64) to the integer
    if abs(exact) >= _BEYOND_INT64:
        raise ValueError("is too large")
    if exact != exact.to_integral_value():
        raise ValueError("is not an integer")
    return int(exact)


def canonical_label(value: Any) -> str:
    """The class name of one label value (see the module docstring); ``""`` for a missing one.

    Parameters
    ----------
    value : Any
        A label as a reader gives it: str, int, float, bool, numpy scalar or None.

    Returns
    -------
    str
        The class name.

    Raises
    ------
    ValueError
        The value is no class name; the message says why (for the caller to name the input).
    """
    if _is_missing(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)) and np.isnan(value):
        return ""
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = _integral_number(value)
        if abs(number) >= LARGEST_LABEL:
            raise ValueError("is too large to be a class name")
        return str(number)
    if not isinstance(value, str):
        raise ValueError(f"is a {type(value).__name__}, not a class name")
    text = unicodedata.normalize("NFC", value.strip())
    if _CONTROL.search(text):
        raise ValueError("holds a control character or line break (a newline, tab, U+2028, "
                         "...)")
    if text.lower() in BOOLEANS:
        return BOOLEANS[text.lower()]
    if NUMBER.fullmatch(text):
        return canonical_label(_integral_number(text))
    return text


def _is_missing(value: Any) -> bool:
    """Whether ``value`` is a format's own missing value other than NaN: None, or pandas'
    ``NA``/``NaT`` (nullable Int64, string and boolean columns hold ``NA`` for a null)."""
    return value is None or value is pd.NA or value is pd.NaT


def _shown(value: Any) -> Any:
    """``value`` as a message shows it: a numpy scalar as its Python value (``0.5``, not
    ``np.float32(0.5)``)."""
    return value.item() if isinstance(value, np.generic) else value


def is_number_name(name: str) -> bool:
    """Whether a canonical class name is a number."""
    return bool(INTEGER_NAME.fullmatch(name))


def canonical_labels(values: Iterable[Any], describe: Callable[[int], str],
                     fix: str = "fix the value or remove the row") -> np.ndarray:
    """:func:`canonical_label` of every value, as an object array of class names.

    Parameters
    ----------
    values : Iterable[Any]
        The labels of one column, in row order.
    describe : Callable[[int], str]
        Names a row position for the message, e.g. ``"sst.csv: label column 'y' at line 5"``.
    fix : str
        What the user should do about a refused value.

    Returns
    -------
    numpy.ndarray
        Class names (``""`` where missing), one per value.

    Raises
    ------
    DataError
        For the first value that is no class name.
    """
    memo: dict[tuple[type, Any], str] = {}
    out = []
    for position, value in enumerate(values):
        try:
            key = (type(value), value)
            name = memo.get(key)
        except TypeError:  # unhashable (a list): canonical_label refuses it below
            key, name = None, None
        if name is None:
            try:
                name = canonical_label(value)
            except ValueError as exc:
                raise DataError(f"{describe(position)}: label {_shown(value)!r} {exc}; labels "
                                f"are class names (text, or integers): {fix}") from None
            if key is not None:
                memo[key] = name
        out.append(name)
    return np.asarray(out, dtype=object)


def check_one_kind(names: Iterable[str], where: str, fix: str) -> None:
    """Refuse class names that are partly numbers and partly other text (see the module
    docstring); ``where`` names the column or option, ``fix`` says what to do."""
    distinct = sorted(set(names) - {""})
    numbers = [n for n in distinct if is_number_name(n)]
    texts = [n for n in distinct if not is_number_name(n)]
    if numbers and texts:
        raise DataError(
            f"{where}: labels mix numbers ({', '.join(map(repr, numbers[:3]))}) and text "
            f"({', '.join(map(repr, texts[:3]))}); a label column holds either kind, never both "
            f"(is {texts[0]!r} a stray value?): {fix}"
        )


def config_labels(values: Any, key: str) -> list[str]:
    """Label values given in the configuration (``classes``, ``drop_labels``) as class names.

    Parameters
    ----------
    values : Any
        A list of label values (already a list: see :func:`datamap.data.options.as_list`).
    key : str
        The config key, for messages.

    Returns
    -------
    list[str]
        The class names, in the order given.

    Raises
    ------
    ConfigError
        For a value that is no class name.
    """
    names = []
    for value in values:
        try:
            names.append(canonical_label(value))
        except ValueError as exc:
            raise ConfigError(f"{key}: {value!r} {exc}; labels are class names (text, or "
                              "integers)") from None
    return names


# --------------------------------------------------------------------------------------------
# ids


def canonical_id(value: Any) -> int:
    """The integer id one value denotes (see the module docstring).

    Parameters
    ----------
    value : Any
        An id as a reader gives it.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        The value denotes no integer id; the message says why.
    """
    if _is_missing(value):
        raise ValueError("is missing")
    if isinstance(value, (bool, np.bool_)):
        raise ValueError("is not an integer")
    if isinstance(value, (float, np.floating)) and np.isnan(value):
        raise ValueError("is missing")
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("is missing")
        if not NUMBER.fullmatch(text):
            raise ValueError("is not an integer")
        value = text
    elif not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"is a {type(value).__name__}, not an integer")
    number = _integral_number(value)
    if not _INT64[0] <= number <= _INT64[1]:
        raise ValueError("is outside the 64-bit integer range")
    return number


def canonical_ids(values: Sequence[Any] | np.ndarray, describe: Callable[[int], str],
                  fix: str) -> np.ndarray:
    """:func:`canonical_id` of every value, as int64 (a typed integer column is taken as it is).

    Parameters
    ----------
    values : Sequence[Any] or numpy.ndarray
        The ids of one column, in row order.
    describe : Callable[[int], str]
        Names a row position for the message.
    fix : str
        What the user should do about a refused value.

    Returns
    -------
    numpy.ndarray
        int64 ids.

    Raises
    ------
    DataError
        For the first value that is no integer id.
    """
    array = np.asarray(values)
    if array.dtype.kind in "iu":
        if array.dtype.kind == "u" and len(array) and array.max() > _INT64[1]:
            first = int(np.argmax(array > _INT64[1]))
            raise DataError(f"{describe(first)}: id {array[first]!r} is outside the 64-bit "
                            f"integer range; {fix}")
        return array.astype(np.int64)
    out = np.empty(len(array), dtype=np.int64)
    for position, value in enumerate(array):  # numpy scalars keep their float width
        try:
            out[position] = canonical_id(value)
        except ValueError as exc:
            raise DataError(f"{describe(position)}: id {_shown(value)!r} {exc}; ids are "
                            f"integers (7 and 7.0 are the id 7): {fix}") from None
    return out

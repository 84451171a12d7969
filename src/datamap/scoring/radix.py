"""Which k items come first in an order, found from a few passes over chunks (radix selection).

The quantile region rule takes the k examples of highest variability (ties by id), then the k'
of lowest confidence among the others. Sorting would need every value at once; a radix
selection finds exactly the same items in memory that does not grow with the number of items:
each pass over the data counts the next digits of the keys still in question, narrowing the
search to the bucket that holds the k-th item, and once that bucket is small it is collected
and sorted. The result is a :class:`Cut` -- the k-th item itself -- that tells any later chunk
which of its items are among the first k.

Items are ordered by a pair of unsigned 64-bit keys (primary, then secondary); secondary keys
must be unique (ids), so that exactly k items are at or before the cut. :func:`float_keys` and
:func:`int_keys` turn float64 values and int64 ids into keys with the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

_SIGN = np.uint64(1 << 63)
#: Bits counted per pass, most significant first, for each 64-bit key word (bincount sizes).
DIGIT_BITS = (20, 20, 12, 12)
#: A bucket holding at most this many items is collected and sorted rather than counted again.
COLLECT_ITEMS = 1 << 20

#: A fresh pass over the items: an iterable of (primary, secondary) uint64 key arrays.
KeyPasses = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


def float_keys(values: np.ndarray, *, descending: bool = False) -> np.ndarray:
    """uint64 keys that order like the float64 ``values`` (ascending, or ``descending``);
    -0.0 and 0.0 get the same key, as they compare equal. NaN has no place in an order."""
    v = np.asarray(values, dtype=np.float64) + 0.0  # -0.0 + 0.0 is 0.0
    if np.isnan(v).any():
        raise ValueError("cannot order NaN values")
    bits = v.view(np.uint64)
    # IEEE 754: flip every bit of a negative number, only the sign bit of a positive one
    keys = np.where(bits & _SIGN, ~bits, bits | _SIGN)
    return ~keys if descending else keys


def int_keys(values: np.ndarray) -> np.ndarray:
    """uint64 keys that order like the int64 ``values``."""
    return np.asarray(values, dtype=np.int64).view(np.uint64) ^ _SIGN


@dataclass(frozen=True)
class Cut:
    """The k-th item of an order: an item is among the first k iff its keys are at or before
    (``primary``, ``secondary``)."""

    primary: int
    secondary: int

    def takes(self, primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
        """bool [n]: which of these items are among the first k."""
        p, s = np.uint64(self.primary), np.uint64(self.secondary)
        return (primary < p) | ((primary == p) & (secondary <= s))


def _levels() -> list[tuple[int, int, int]]:
    """(word, shift, bits) of every digit, most significant first."""
    levels = []
    for word in (0, 1):
        shift = 64
        for bits in DIGIT_BITS:
            shift -= bits
            levels.append((word, shift, bits))
    return levels


def _in_bucket(keys: tuple[np.ndarray, np.ndarray],
               prefix: list[tuple[int, int]]) -> np.ndarray | None:
    """Items whose leading bits match ``prefix`` ((value, bits) per word); None: all do."""
    mask = None
    for (value, bits), key in zip(prefix, keys, strict=False):
        if bits == 0:
            continue
        match = (key == np.uint64(value)) if bits == 64 else (
            (key >> np.uint64(64 - bits)) == np.uint64(value))
        mask = match if mask is None else mask & match
    return mask


def first_k(passes: KeyPasses, k: int, *, collect_items: int = COLLECT_ITEMS) -> Cut | None:
    """The :class:`Cut` taking exactly the ``k`` smallest (primary, secondary) pairs of the
    items every call of ``passes()`` yields; None for k = 0. Reads the items once per digit it
    needs (2 or 3 passes for typical data) plus once to collect the last bucket; memory holds
    one chunk plus at most ``collect_items`` items. Raises ValueError when there are fewer than
    ``k`` items."""
    if k <= 0:
        return None
    prefix = [(0, 0), (0, 0)]  # per key word: the digits fixed so far, and how many bits
    need, bucket = k, None
    for word, shift, bits in _levels():
        if bucket is not None and bucket <= collect_items:
            break
        counts = np.zeros(1 << bits, dtype=np.int64)
        for keys in passes():
            mask = _in_bucket(keys, prefix)
            key = keys[word] if mask is None else keys[word][mask]
            digits = ((key >> np.uint64(shift)) & np.uint64((1 << bits) - 1)).astype(np.intp)
            counts += np.bincount(digits, minlength=1 << bits)
        cumulative = np.cumsum(counts)
        if bucket is None and cumulative[-1] < k:
            raise ValueError(f"asked for the first {k} items of {int(cumulative[-1])}")
        digit = int(np.searchsorted(cumulative, need))  # the first bucket reaching `need`
        need -= int(cumulative[digit - 1]) if digit else 0
        bucket = int(counts[digit])
        value, fixed = prefix[word]
        prefix[word] = ((value << bits) | digit, fixed + bits)
    primary, secondary = [], []
    for keys in passes():
        mask = _in_bucket(keys, prefix)
        primary.append(keys[0] if mask is None else keys[0][mask])
        secondary.append(keys[1] if mask is None else keys[1][mask])
    p, s = np.concatenate(primary), np.concatenate(secondary)
    last = np.lexsort((s, p))[need - 1]
    return Cut(int(p[last]), int(s[last]))

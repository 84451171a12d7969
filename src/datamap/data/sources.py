"""Raw data: what a source hands to the prepare stage, and the built-in digits source.

A source is a small object built from config with ``hydra.utils.instantiate`` whose ``load()``
returns a :class:`SourceData`: the training examples and, when the source has them, its own
validation, test and control examples, each a :class:`RawData`. The file sources live in
:mod:`datamap.data.table` and :mod:`datamap.data.image_folder`.

Labels are class indices into ``class_names``; :func:`class_names_of` and :func:`encode_labels`
turn the label values read from a file (strings or integers) into them, and
:meth:`RawData.relabel` moves a split onto the class list shared by every split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from datamap.data.labels import (
    canonical_labels,
    check_one_kind,
    config_labels,
    is_number_name,
)
from datamap.data.options import as_list
from datamap.errors import ConfigError, DataError


@dataclass
class RawData:
    """The examples of one split before preparation.

    The input is either ``x``, a float32 array [N, *input_shape] (``input_kind`` ``image`` or
    ``tabular``), or ``text``, an array of N strings, plus ``text_pair`` for sentence pairs
    (``input_kind`` ``text``). ``labels`` int64 [N] index ``class_names``; ``ids`` int64 [N] are
    unique and stable across runs (they key the dynamics table). ``origin`` names where the
    examples came from (a file or folder) for error messages; ``files`` optionally gives each
    example's source file (image folders), shown to annotators in the review queue.
    """

    labels: np.ndarray
    ids: np.ndarray
    class_names: list[str]
    x: np.ndarray | None = None
    text: np.ndarray | None = None
    text_pair: np.ndarray | None = None
    input_kind: str = "image"
    description: str = ""
    origin: str = "data.source"
    files: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """[C, H, W] or [F] for ``x``; for text, [number of text fields] (1, or 2 for pairs)."""
        if self.x is not None:
            return tuple(int(d) for d in self.x.shape[1:])
        return (1 if self.text_pair is None else 2,)

    def take(self, positions: np.ndarray) -> RawData:
        """The examples at ``positions`` (in that order)."""
        def pick(values):
            return None if values is None else values[positions]

        return replace(self, labels=self.labels[positions], ids=self.ids[positions],
                       x=pick(self.x), text=pick(self.text), text_pair=pick(self.text_pair),
                       files=pick(self.files))

    def relabel(self, class_names: Sequence[str], reference: str) -> RawData:
        """The same examples with labels indexing ``class_names`` (the training classes).

        A label not among them is an error naming this split's origin and ``reference``.
        """
        class_names = list(class_names)
        if self.class_names == class_names:
            return self
        index = {name: i for i, name in enumerate(class_names)}
        present = [self.class_names[i] for i in np.unique(self.labels)]
        unknown = [name for name in present if name not in index]
        if unknown:
            raise DataError(
                f"{self.origin}: label(s) {', '.join(map(repr, unknown[:5]))} never occur in "
                f"{reference}; a model cannot learn a class it never sees: add examples of it "
                "to the training data or remove these rows"
            )
        mapping = np.array([index.get(name, -1) for name in self.class_names], dtype=np.int64)
        return replace(self, labels=mapping[self.labels], class_names=class_names)

    def fingerprint(self) -> str:
        """A content hash of ids, labels, inputs and class names."""
        digest = hashlib.sha256()
        for array in (self.ids, self.labels, self.x):
            if array is not None:
                digest.update(np.ascontiguousarray(array).tobytes())
        for texts in (self.text, self.text_pair):
            if texts is not None:
                digest.update("\x1e".join(texts.tolist()).encode())
        digest.update("\x1f".join(self.class_names).encode())
        return digest.hexdigest()

    def validate(self) -> None:
        """Refuse what no later stage can use: no examples, misaligned or duplicate ids, labels
        out of range, non-finite inputs, empty texts."""
        n, where = len(self.labels), self.origin
        if n == 0:
            raise DataError(f"{where}: no examples")
        if (self.x is None) == (self.text is None):
            raise DataError(f"{where}: give exactly one input, x or text")
        inputs = [a for a in (self.x, self.text, self.text_pair) if a is not None]
        if len(self.ids) != n or any(len(a) != n for a in inputs):
            raise DataError(f"{where}: inputs, labels and ids have different lengths")
        check_unique_ids(self.ids, where, "ids")
        if self.labels.min() < 0 or self.labels.max() >= len(self.class_names):
            raise DataError(f"{where}: labels outside [0, {len(self.class_names)})")
        if self.x is not None and not np.isfinite(self.x).all():
            raise DataError(f"{where}: inputs contain NaN or infinite values")
        for texts in (self.text, self.text_pair):
            if texts is not None and not all(t.strip() for t in texts.tolist()):
                raise DataError(f"{where}: empty texts")


@dataclass
class SourceData:
    """What a source's ``load()`` returns.

    ``train`` is required; a missing ``val`` or ``test`` is split off ``train`` by the prepare
    stage. ``controls`` maps a control set's name to its examples and ``control_descriptions``
    to what it is. ``dropped`` counts the rows left out per split because their label is in
    ``drop_labels`` (e.g. SNLI's ``-``).
    """

    train: RawData
    val: RawData | None = None
    test: RawData | None = None
    controls: dict[str, RawData] = field(default_factory=dict)
    control_descriptions: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    description: str = ""


def check_unique_ids(ids: np.ndarray, where: str, column: str) -> None:
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        first = int(np.argmax(counts > 1))
        raise DataError(
            f"{where}: id {values[first]} occurs {counts[first]} times in {column} "
            f"({int((counts > 1).sum())} duplicated id(s)); every example needs its own id: "
            "fix the ids, or leave data.source.id_column unset to number rows in file order"
        )


# --------------------------------------------------------------------------------------------
# labels


def label_strings(values: Iterable, describe=None) -> np.ndarray:
    """Label values as class names by the one rule of :mod:`datamap.data.labels` (``1``,
    ``1.0`` and ``"1.0"`` are the class ``1``; missing values are ``""``), so the same label
    read from any format gives the same class. ``describe`` names a row position for the
    message of a refused value (default: the position)."""
    return canonical_labels(values, describe or (lambda position: f"row {position}"))


def _sort_key(name: str) -> tuple:
    # integer-like class names sort numerically (2 before 10), the rest as text
    if is_number_name(name):
        return (0, int(name), "")
    return (1, 0, name)


def class_names_of(values: np.ndarray, classes: Sequence | None = None,
                   key: str = "data.source.classes") -> list[str]:
    """The class list: ``classes`` as given (each by :func:`~datamap.data.labels.canonical_label`,
    a bare value being a list of one), else the sorted distinct values."""
    if classes is not None:
        names = config_labels(as_list(classes, key), key)
        if "" in names:
            raise ConfigError(f"{key} lists an empty class name: {names}")
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ConfigError(f"{key} lists a class twice: {names} ({', '.join(twice)} once "
                              "the rule of docs/own-data.md reads 1 and 1.0 as the class 1)")
        check_one_kind(names, key, f"write every class of {key} as text or every one as an "
                       "integer")
        return names
    return sorted({str(v) for v in values}, key=_sort_key)


def encode_labels(values: np.ndarray, class_names: Sequence[str], where: str) -> np.ndarray:
    """Class indices of label strings; one not in ``class_names`` is an error."""
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({v for v in values.tolist() if v not in index})
    if unknown:
        raise DataError(
            f"{where}: label(s) {', '.join(map(repr, unknown[:5]))} not in data.source.classes "
            f"{list(class_names)}; fix the labels or add the classes"
        )
    return np.fromiter((index[v] for v in values.tolist()), dtype=np.int64, count=len(values))


def named_paths(value: str | Mapping[str, str] | None, default_name: str) -> dict[str, str]:
    """A control-set setting: one path (named ``default_name``) or a mapping name -> path."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    return {default_name: str(value)}


# --------------------------------------------------------------------------------------------
# the built-in demo


class DigitsSource:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), shipped inside the
    package, so the pipeline runs offline. Pixels are scaled from 0..16 to [0, 1]."""

    def load(self) -> SourceData:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]  # [N, 1, 8, 8]
        description = "scikit-learn load_digits (8x8 grey-scale, pixels scaled to [0, 1])"
        raw = RawData(
            x=x,
            labels=digits.target.astype(np.int64),
            ids=np.arange(len(x), dtype=np.int64),
            class_names=[str(c) for c in digits.target_names],
            input_kind="image",
            description=description,
            origin="scikit-learn load_digits",
        )
        return SourceData(train=raw, description=description)

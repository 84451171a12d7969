"""Raw data sources: where examples come from before they are split.

A source is a small object built from config with ``hydra.utils.instantiate`` whose ``load()``
returns a :class:`RawData`: stable integer ids, integer labels, class names and the inputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from datamap.io import DataError


@dataclass
class RawData:
    """Examples before splitting.

    ``x`` is a float32 array [N, *input_shape]; ``labels`` int64 [N] in [0, len(class_names));
    ``ids`` int64 [N], unique and stable across runs (they key the dynamics table).
    """

    x: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    class_names: list[str]
    input_kind: str = "image"  # "image" (x is [C, H, W]) or "tabular" (x is [F])
    description: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    def fingerprint(self) -> str:
        """A content hash of ids, labels and inputs: identical data gives the identical hash."""
        digest = hashlib.sha256()
        for array in (self.ids, self.labels, self.x):
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update("\x1f".join(self.class_names).encode())
        return digest.hexdigest()

    def validate(self, source: str) -> None:
        n = len(self.labels)
        if n == 0:
            raise DataError(f"{source}: no examples")
        if len(self.x) != n or len(self.ids) != n:
            raise DataError(f"{source}: inputs, labels and ids have different lengths")
        if len(np.unique(self.ids)) != n:
            raise DataError(f"{source}: ids are not unique; give each example its own id")
        if self.labels.min() < 0 or self.labels.max() >= len(self.class_names):
            raise DataError(f"{source}: labels outside [0, {len(self.class_names)})")
        if not np.isfinite(self.x).all():
            raise DataError(f"{source}: inputs contain NaN or infinite values")


class DigitsSource:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), shipped inside the
    package, so the pipeline runs offline. Pixels are scaled from 0..16 to [0, 1]."""

    def load(self) -> RawData:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]  # [N, 1, 8, 8]
        return RawData(
            x=x,
            labels=digits.target.astype(np.int64),
            ids=np.arange(len(x), dtype=np.int64),
            class_names=[str(c) for c in digits.target_names],
            input_kind="image",
            description="scikit-learn load_digits (8x8 grey-scale, pixels scaled to [0, 1])",
        )


class TabularFileSource:
    """A CSV or Parquet file with one row per example: a label column and numeric features.

    Args:
        path: the file (``.csv`` or ``.parquet``).
        label_column: the column holding class labels (any type; mapped to indices).
        feature_columns: the numeric feature columns; default every column but label and id.
        id_column: a column of unique integer ids; default the row number.
        classes: the class names in index order; default the sorted distinct labels. With it,
            a label not in the list is an error (a typo should not become a new class).
    """

    def __init__(
        self,
        path: str,
        label_column: str = "label",
        feature_columns: Sequence[str] | None = None,
        id_column: str | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.label_column = label_column
        self.feature_columns = list(feature_columns) if feature_columns is not None else None
        self.id_column = id_column
        self.classes = [str(c) for c in classes] if classes is not None else None

    def _read(self) -> pd.DataFrame:
        if not self.path.is_file():
            raise DataError(f"{self.path}: data file not found; set data.source.path")
        suffix = self.path.suffix.lower()
        if suffix == ".csv":
            return pd.read_csv(self.path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(self.path)
        raise DataError(f"{self.path}: unsupported file type {suffix!r}; use .csv or .parquet")

    def load(self) -> RawData:
        frame = self._read()
        where = str(self.path)
        if self.label_column not in frame.columns:
            raise DataError(
                f"{where}: no label column {self.label_column!r} (columns: "
                f"{', '.join(map(str, frame.columns))}); set data.source.label_column"
            )
        if self.id_column is not None and self.id_column not in frame.columns:
            raise DataError(f"{where}: no id column {self.id_column!r}; set data.source.id_column")
        reserved = {self.label_column, self.id_column}
        features = self.feature_columns or [c for c in frame.columns if c not in reserved]
        missing = [c for c in features if c not in frame.columns]
        if missing:
            raise DataError(f"{where}: missing feature column(s) {', '.join(missing)}")
        if not features:
            raise DataError(f"{where}: no feature columns; set data.source.feature_columns")
        non_numeric = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])]
        if non_numeric:
            raise DataError(
                f"{where}: feature column(s) {', '.join(non_numeric)} are not numeric; encode "
                "them or leave them out of data.source.feature_columns"
            )
        if frame[self.label_column].isna().any():
            raise DataError(f"{where}: column {self.label_column!r} has missing labels")

        raw_labels = frame[self.label_column].astype(str).to_numpy()
        class_names = self.classes or sorted(set(raw_labels))
        index = {name: i for i, name in enumerate(class_names)}
        unknown = sorted(set(raw_labels) - index.keys())
        if unknown:
            raise DataError(
                f"{where}: label(s) {unknown[:5]} not in data.source.classes {class_names}; "
                "fix the labels or add the classes"
            )
        labels = np.fromiter((index[v] for v in raw_labels), dtype=np.int64, count=len(frame))

        if self.id_column is None:
            ids = np.arange(len(frame), dtype=np.int64)
        else:
            if not pd.api.types.is_integer_dtype(frame[self.id_column]):
                raise DataError(f"{where}: id column {self.id_column!r} must hold integers")
            ids = frame[self.id_column].to_numpy(dtype=np.int64)
        raw = RawData(
            x=frame[features].to_numpy(dtype=np.float32),
            labels=labels,
            ids=ids,
            class_names=class_names,
            input_kind="tabular",
            description=f"{self.path.name}: {len(features)} numeric features",
        )
        raw.validate(where)
        return raw


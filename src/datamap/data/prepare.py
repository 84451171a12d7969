"""The prepare stage: raw source -> seeded stratified splits, label noise, control set, Parquet.

Writes ``{train,val,test,control}.parquet`` and ``meta.json`` into one directory, built in a
temporary sibling and swapped in whole (no partial artifact on failure).

Prepared split contract (DESIGN.md section 3): ``id`` int64 (unique, stable), ``label`` int64,
``x`` fixed-size list<float32> (inputs flattened; ``meta.json`` has ``input_shape``), and on the
train split, when noise is injected, ``clean_label`` int64 (the label before noise).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from datamap.data.sources import RawData
from datamap.io import (
    ConfigError,
    DataError,
    atomic_path,
    read_json,
    read_parquet,
    with_metadata,
    write_json,
    write_parquet,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "control")


def check_fraction(key: str, value: Any, low: float, high: float, high_open: bool = True) -> float:
    """Validate a config fraction ``low <= value < high`` (or ``<= high``) and return it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    ok = low <= value < high if high_open else low <= value <= high
    if not ok:
        bracket = ")" if high_open else "]"
        raise ConfigError(f"{key} must be in [{low:g}, {high:g}{bracket}, got {value}")
    return float(value)


def stratified_split(
    labels: np.ndarray, val: float, test: float, seed: int
) -> dict[str, np.ndarray]:
    """Positions of a seeded stratified train/val/test split (sorted within each split)."""
    from sklearn.model_selection import train_test_split

    positions = np.arange(len(labels))
    try:
        rest, test_pos = train_test_split(
            positions, test_size=test, stratify=labels, random_state=seed
        )
        train_pos, val_pos = train_test_split(
            rest, test_size=val / (1.0 - test), stratify=labels[rest], random_state=seed + 1
        )
    except ValueError as exc:
        raise DataError(
            f"cannot split {len(labels)} examples stratified into val={val}, test={test}: {exc}; "
            "use more data or larger split fractions"
        ) from exc
    return {"train": np.sort(train_pos), "val": np.sort(val_pos), "test": np.sort(test_pos)}


def inject_label_noise(
    labels: np.ndarray, rate: float, num_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Uniform label noise: exactly round(rate * N) examples get a different, uniformly drawn label.

    Returns (noisy_labels, flipped_mask). Each flipped example's new label is drawn uniformly
    from the other num_classes - 1 classes, so every flip really changes the label.
    """
    rng = np.random.default_rng(seed)
    n = len(labels)
    n_flip = int(round(rate * n))
    if n_flip and num_classes < 2:
        raise ConfigError("data.label_noise needs at least two classes to flip labels")
    flipped = np.zeros(n, dtype=bool)
    flipped[rng.choice(n, size=n_flip, replace=False)] = True
    offsets = rng.integers(1, max(num_classes, 2), size=n_flip)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + offsets) % num_classes
    return noisy, flipped


def split_table(
    ids: np.ndarray, labels: np.ndarray, x: np.ndarray, split: str,
    clean_labels: np.ndarray | None = None, **metadata: Any,
) -> pa.Table:
    """Arrow table of one prepared split, rows sorted by id."""
    order = np.argsort(ids, kind="stable")
    flat = np.ascontiguousarray(x[order].reshape(len(ids), -1), dtype=np.float32)
    width = flat.shape[1]
    columns = {
        "id": pa.array(ids[order], type=pa.int64()),
        "label": pa.array(labels[order], type=pa.int64()),
        "x": pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel(), type=pa.float32()), width),
    }
    if clean_labels is not None:
        columns["clean_label"] = pa.array(clean_labels[order], type=pa.int64())
    return with_metadata(pa.table(columns), {"split": split, **metadata})


def prepare(
    raw: RawData,
    out_dir: str | os.PathLike,
    *,
    val: float,
    test: float,
    label_noise: float,
    control: Any,
    seed: int,
) -> dict[str, Any]:
    """Split ``raw``, inject train label noise, build the control set, and write ``out_dir``."""
    label_noise = check_fraction("data.label_noise", label_noise, 0.0, 1.0)
    val = check_fraction("data.split.val", val, 0.0, 1.0)
    test = check_fraction("data.split.test", test, 0.0, 1.0)
    if val <= 0 or test <= 0 or val + test >= 1:
        raise ConfigError(
            f"data.split.val ({val}) and data.split.test ({test}) must be > 0 and sum to < 1 "
            "(the rest is the training split)"
        )
    if not callable(control) or not callable(getattr(control, "describe", None)):
        raise ConfigError("data.control must build a shift with __call__(x, rng) and describe()")
    raw.validate("data.source")
    num_classes = len(raw.class_names)

    positions = stratified_split(raw.labels, val, test, seed)
    train_pos = positions["train"]
    clean = raw.labels[train_pos]
    noisy, flipped = inject_label_noise(clean, label_noise, num_classes, seed + 2)
    control_x = control(raw.x[positions["test"]], np.random.default_rng(seed + 3))

    tables = {
        "train": split_table(raw.ids[train_pos], noisy, raw.x[train_pos], "train",
                             clean if label_noise > 0 else None),
        "val": split_table(raw.ids[positions["val"]], raw.labels[positions["val"]],
                           raw.x[positions["val"]], "val"),
        "test": split_table(raw.ids[positions["test"]], raw.labels[positions["test"]],
                            raw.x[positions["test"]], "test"),
        # The control set reuses the test ids: each control example is a shifted test example.
        # Its shift is described in its own metadata, not meta.json, so that changing the shift
        # reruns only evaluation (meta.json is a dependency of training).
        "control": split_table(raw.ids[positions["test"]], raw.labels[positions["test"]],
                               control_x, "control", shift=control.describe()),
    }
    meta = {
        "class_names": raw.class_names,
        "num_classes": num_classes,
        "input_kind": raw.input_kind,
        "input_shape": list(raw.input_shape),
        "source": raw.description,
        "source_fingerprint": raw.fingerprint(),
        "seed": seed,
        "split_fractions": {"train": round(1 - val - test, 6), "val": val, "test": test},
        "sizes": {name: table.num_rows for name, table in tables.items()},
        "label_noise": label_noise,
        "flipped": int(flipped.sum()),
    }
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for name, table in tables.items():
            write_parquet(tmp / f"{name}.parquet", table)
        write_json(tmp / "meta.json", meta)
    log.info(
        "prepared %s: %s; %d of %d training labels flipped; control = %s",
        out_dir, meta["sizes"], meta["flipped"], len(train_pos), control.describe(),
    )
    return meta


# --------------------------------------------------------------------------------------------
# reading prepared splits


@dataclass
class PreparedSplit:
    """One prepared split in memory: ids [N], labels [N], x [N, *input_shape] float32."""

    ids: np.ndarray
    labels: np.ndarray
    x: np.ndarray
    clean_labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, ids: np.ndarray) -> PreparedSplit:
        """The examples whose id is in ``ids`` (order of this split kept)."""
        keep = np.isin(self.ids, ids)
        clean = self.clean_labels[keep] if self.clean_labels is not None else None
        return PreparedSplit(self.ids[keep], self.labels[keep], self.x[keep], clean)


def read_meta(prepared_dir: str | os.PathLike) -> dict[str, Any]:
    return read_json(Path(prepared_dir) / "meta.json", what="prepared metadata")


def read_split(
    prepared_dir: str | os.PathLike, split: str, meta: Mapping[str, Any] | None = None
) -> PreparedSplit:
    """Load a prepared split, checking its columns and its inputs' shape against meta.json."""
    prepared_dir = Path(prepared_dir)
    meta = meta if meta is not None else read_meta(prepared_dir)
    path = prepared_dir / f"{split}.parquet"
    table = read_parquet(path, required=("id", "label", "x"), what=f"{split} split",
                         hint="run the prepare stage first")
    shape = tuple(meta["input_shape"])
    width = int(np.prod(shape))
    x_col = table.column("x").combine_chunks()
    if not pa.types.is_fixed_size_list(x_col.type) or x_col.type.list_size != width:
        raise DataError(
            f"{path}: column 'x' must be fixed-size lists of {width} floats (input_shape "
            f"{list(shape)} in meta.json); rerun the prepare stage"
        )
    x = x_col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    clean = None
    if "clean_label" in table.column_names:
        clean = table.column("clean_label").to_numpy()
    return PreparedSplit(
        ids=table.column("id").to_numpy(),
        labels=table.column("label").to_numpy(),
        x=x.reshape(table.num_rows, *shape),
        clean_labels=clean,
    )

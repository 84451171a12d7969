"""The prepared-split contract: how the prepare stage's files are laid out, written and read.

``data/prepared/`` holds ``train.parquet``, ``val.parquet``, ``test.parquet``, ``meta.json``
and ``controls/``: one ``<name>.parquet`` per control set (its description in the file's
schema metadata) and ``index.json`` listing them. Control sets live apart from ``meta.json``
(a dependency of training) so that changing one reruns evaluation, never training.

A split file has ``id`` int64 (unique within the split, stable across runs), ``label`` int64
(index into ``meta.json``'s ``class_names``) and the input: ``x`` fixed-size list<float32>
(images [C, H, W] and feature vectors [F], flattened; ``meta.json`` has ``input_shape``) or
``text`` string plus ``text_pair`` string for sentence pairs (``input_shape`` is then [1] or
[2], the number of text fields). Optional: ``clean_label`` int64 on the train split when label
noise was injected (the label before noise), ``file`` string (an image's source file).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from datamap.errors import DataError
from datamap.io import read_json, read_parquet, with_metadata

#: ``input_kind`` of inputs held as strings in ``text`` (and ``text_pair`` for sentence pairs).
TEXT = "text"

#: The splits every prepared directory has.
SPLITS = ("train", "val", "test")
CONTROLS = "controls"
CONTROL_INDEX = "index.json"
#: A control set's name: it becomes a file name and a metrics key.
CONTROL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def split_table(data: Any, split: str, clean_labels: np.ndarray | None = None,
                **metadata: Any) -> pa.Table:
    """Arrow table of one prepared split (``data`` a :class:`datamap.data.sources.RawData`;
    not imported, so readers of prepared data do not depend on the sources), sorted by id."""
    order = np.argsort(data.ids, kind="stable")
    columns: dict[str, pa.Array] = {
        "id": pa.array(data.ids[order], type=pa.int64()),
        "label": pa.array(data.labels[order], type=pa.int64()),
    }
    if data.x is not None:
        flat = np.ascontiguousarray(data.x[order].reshape(len(order), -1), dtype=np.float32)
        columns["x"] = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel(), pa.float32()),
                                                         flat.shape[1])
    for attr, column in (("text", "text"), ("text_pair", "text_pair"), ("files", "file")):
        values = getattr(data, attr)
        if values is not None:
            columns[column] = pa.array(values[order].tolist(), type=pa.string())
    if clean_labels is not None:
        columns["clean_label"] = pa.array(clean_labels[order], type=pa.int64())
    return with_metadata(pa.table(columns), {"split": split, **metadata})


@dataclass
class PreparedSplit:
    """One prepared split in memory: ``ids`` [N], ``labels`` [N] and the input, ``x``
    [N, *input_shape] float32 or ``text`` [N] (+ ``text_pair`` [N]) string arrays."""

    ids: np.ndarray
    labels: np.ndarray
    x: np.ndarray | None = None
    clean_labels: np.ndarray | None = None
    text: np.ndarray | None = None
    text_pair: np.ndarray | None = None
    files: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, ids: np.ndarray) -> PreparedSplit:
        """The examples whose id is in ``ids`` (order of this split kept)."""
        keep = np.isin(self.ids, ids)
        return replace(self, **{name: None if value is None else value[keep]
                                for name, value in vars(self).items()})


def read_meta(prepared_dir: str | os.PathLike) -> dict[str, Any]:
    return read_json(Path(prepared_dir) / "meta.json", what="prepared metadata")


def input_columns(meta: Mapping[str, Any]) -> tuple[str, ...]:
    """The input column(s) a split of this prepared data has."""
    if meta.get("input_kind") == TEXT:
        return ("text", "text_pair") if list(meta["input_shape"]) == [2] else ("text",)
    return ("x",)


def read_split_file(path: str | os.PathLike, meta: Mapping[str, Any]) -> PreparedSplit:
    """Load one prepared split file, checking its columns and inputs against ``meta``."""
    path = Path(path)
    inputs = input_columns(meta)
    table = read_parquet(path, required=("id", "label", *inputs), what="prepared split",
                         hint="run the prepare stage first")
    columns: dict[str, Any] = {}
    if inputs == ("x",):
        shape = tuple(meta["input_shape"])
        width = int(np.prod(shape))
        x_col = table.column("x").combine_chunks()
        if not pa.types.is_fixed_size_list(x_col.type) or x_col.type.list_size != width:
            raise DataError(
                f"{path}: column 'x' must be fixed-size lists of {width} floats (input_shape "
                f"{list(shape)} in meta.json); rerun the prepare stage"
            )
        x = x_col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        columns["x"] = x.reshape(table.num_rows, *shape)
    for name in inputs if inputs != ("x",) else ():
        columns[name] = np.asarray(table.column(name).to_pylist(), dtype=object)
    if "file" in table.column_names:
        columns["files"] = np.asarray(table.column("file").to_pylist(), dtype=object)
    if "clean_label" in table.column_names:
        columns["clean_labels"] = table.column("clean_label").to_numpy()
    labels = table.column("label").to_numpy()
    if len(labels) and (labels.min() < 0 or labels.max() >= int(meta["num_classes"])):
        raise DataError(f"{path}: labels outside the {meta['num_classes']} classes of "
                        "meta.json; the file is stale: rerun the prepare stage")
    return PreparedSplit(ids=table.column("id").to_numpy(), labels=labels, **columns)


def split_path(prepared_dir: str | os.PathLike, split: str) -> Path:
    """The file of a split: ``train``/``val``/``test``, or ``control/<name>``."""
    if split.startswith("control/"):
        return Path(prepared_dir) / CONTROLS / f"{split.split('/', 1)[1]}.parquet"
    return Path(prepared_dir) / f"{split}.parquet"


def read_split(prepared_dir: str | os.PathLike, split: str,
               meta: Mapping[str, Any] | None = None) -> PreparedSplit:
    """Load a prepared split by name (see :func:`split_path`)."""
    meta = meta if meta is not None else read_meta(prepared_dir)
    return read_split_file(split_path(prepared_dir, split), meta)


def read_controls(prepared_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The control sets of a prepared directory: name -> {"description", "examples"}, in the
    order they were configured (empty when there are none)."""
    return read_json(Path(prepared_dir) / CONTROLS / CONTROL_INDEX, what="control-set index")


def eval_splits(prepared_dir: str | os.PathLike) -> list[str]:
    """The evaluation sets: ``test``, then ``control/<name>`` for every control set."""
    return ["test", *(f"control/{name}" for name in read_controls(prepared_dir))]

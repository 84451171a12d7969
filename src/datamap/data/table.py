"""Table files as a source: CSV, TSV, JSON lines or Parquet, one row per example.

The input is one text column, two (sentence pairs such as premise/hypothesis), or numeric
feature columns. Every mistake in a file stops the prepare stage with one line naming the file,
the column, the first offending line and the fix.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from datamap.data.labels import NUMBER, canonical_ids, check_one_kind, config_labels
from datamap.data.options import as_list, column_name, column_names
from datamap.data.sources import (
    RawData,
    SourceData,
    check_unique_ids,
    class_names_of,
    encode_labels,
    label_strings,
    named_paths,
)
from datamap.data.splits import TEXT
from datamap.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: File extension -> format name.
FORMATS = {".csv": "CSV", ".tsv": "TSV", ".jsonl": "JSON lines", ".parquet": "Parquet"}


def read_frame(path: Path, key: str) -> pd.DataFrame:
    """Read one table file by its extension. CSV/TSV cells are read as strings, verbatim (an
    empty cell is ""; "NA" stays text), so each column's meaning is decided by its role."""
    where = f"{path} ({key})"
    if not path.exists():
        raise DataError(f"{where}: file not found; set {key} to an existing file")
    if path.is_dir():
        raise DataError(f"{where}: is a directory; set {key} to a table file")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DataError(f"{where}: unknown file type {suffix or '(none)'!r}; use one of "
                        f"{', '.join(FORMATS)} (the format is chosen by the extension)")
    kind = FORMATS[suffix]
    if path.stat().st_size == 0:
        raise DataError(f"{where}: the file is empty; it needs a header and one row per example")
    text_options = {".csv": {},
                    # tab-separated, unquoted (GLUE's layout): a quote is text
                    ".tsv": {"sep": "\t", "quoting": csv.QUOTE_NONE}}.get(suffix)
    try:
        if text_options is not None:
            options = dict(dtype=str, keep_default_na=False, na_filter=False, **text_options)
            frame = pd.read_csv(path, **options)
            # pandas renames a repeated header name (a second 'label' becomes 'label.1'), so
            # the header is read again as a plain row to see the names as written
            header = pd.read_csv(path, header=None, nrows=1, **options).iloc[0].tolist()
        elif suffix == ".jsonl":
            frame = read_json_lines(path)
        else:
            import pyarrow.parquet as pq

            frame = frame_of(pq.read_table(path))
    except Exception as exc:  # each reader raises its own types; all mean "cannot be read"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{where}: cannot be read as {kind} ({reason}); check that the file is "
                        f"valid {kind} or give it the extension of its real format") from exc
    if text_options is not None:
        # empty names are left out: pandas numbers them apart ('Unnamed: 1', 'Unnamed: 2')
        names = pd.Series([name for name in header if name.strip()])
        repeated = names[names.duplicated()].unique().tolist()
        if repeated:
            raise DataError(
                f"{where}: column {repeated[0]!r} occurs {int((names == repeated[0]).sum())} "
                "times in the header; every column needs its own name: rename or remove the "
                "repeated column(s)"
            )
    if len(frame) == 0:
        raise DataError(f"{where}: no rows; the file needs one row per example")
    frame.columns = [str(c) for c in frame.columns]
    if text_options is not None:
        # header position (1-based) -> pandas' name, of each column whose header is empty
        frame.attrs["unnamed_columns"] = {i + 1: frame.columns[i] for i, name in
                                          enumerate(header) if not name.strip()}
    return frame


def frame_of(table: pa.Table) -> pd.DataFrame:
    """An Arrow table as a frame whose integer columns stay integers: pandas turns an integer
    column with a null into floats (2**53 + 1 becomes 2**53), so such a column becomes pandas'
    nullable integers (the null a ``pd.NA``) instead."""
    frame = table.to_pandas()
    for name, column in zip(table.column_names, table.columns, strict=True):
        if name in frame.columns and pa.types.is_integer(column.type) and column.null_count:
            frame[name] = pd.array(column.to_pylist(), dtype=NULLABLE_INTEGERS[column.type])
    return frame


def exact_values(column: pd.Series) -> np.ndarray:
    """A column's values without loss: a nullable integer column with a null is objects (its
    integers and ``pd.NA``), since pandas' own ``to_numpy`` makes it float64 (inexact beyond
    2**53)."""
    if isinstance(column.dtype, pd.api.extensions.ExtensionDtype) and column.hasnans \
            and pd.api.types.is_integer_dtype(column.dtype):
        return column.to_numpy(dtype=object)
    return column.to_numpy()


#: Arrow integer type -> pandas' nullable integer type.
NULLABLE_INTEGERS = {pa.int8(): "Int8", pa.int16(): "Int16", pa.int32(): "Int32",
                     pa.int64(): "Int64", pa.uint8(): "UInt8", pa.uint16(): "UInt16",
                     pa.uint32(): "UInt32", pa.uint64(): "UInt64"}


def read_json_lines(path: Path) -> pd.DataFrame:
    """A JSON-lines file as a frame, typed by pyarrow (fast on large files such as SNLI).

    pyarrow's type inference reads a string that looks like a date ("2020-01-01") as a
    timestamp and drops its text; a JSON string is text, as the same cell is in CSV, so such
    columns are read again as strings.
    """
    from pyarrow import json as arrow_json

    table = arrow_json.read_json(path)
    temporal = [f.name for f in table.schema if pa.types.is_temporal(f.type)]
    if temporal:
        as_text = arrow_json.ParseOptions(
            explicit_schema=pa.schema([(name, pa.string()) for name in temporal]))
        table = arrow_json.read_json(path, parse_options=as_text).select(table.column_names)
    return frame_of(table)


def row_name(path: Path, position: int) -> str:
    """Where row ``position`` (0-based, after any header) is in the file, for messages."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        lines = _csv_row_lines(path, suffix)
        # past what the csv module could read: a row a line, after the header
        return f"line {lines[position] if position < len(lines) else position + 2}"
    if suffix == ".jsonl":
        return f"line {position + 1}"
    return f"row {position}"


def _csv_row_lines(path: Path, suffix: str) -> list[int]:
    """The 1-based line each data row of a CSV/TSV file starts on, as pandas reads the rows:
    a quoted cell may span lines, and pandas skips blank lines. Read only for a message."""
    options = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if suffix == ".tsv" else {}
    starts, line = [], 1
    try:
        with path.open(newline="", encoding="utf-8-sig", errors="replace") as file:
            reader = csv.reader(file, **options)
            for record in reader:
                if len(record) > 1 or (record and record[0].strip()):  # not a blank line
                    starts.append(line)
                line = reader.line_num + 1
    except csv.Error:  # e.g. a cell over the csv module's size limit: the lines read so far
        pass
    return starts[1:]  # after the header


class TableSource:
    """Examples from table files, one row per example.

    Args:
        train: the training file (required); ``.csv``, ``.tsv``, ``.jsonl`` or ``.parquet``.
        val, test: optional files of the same layout; a missing one is split off ``train``
            (seeded, stratified; ``data.split``).
        control: optional control set(s): one file (named ``control``) or a mapping
            ``name -> file``; each is evaluated and reported in its own columns.
        text_columns: one text column, or two for sentence pairs (e.g. premise, hypothesis).
        feature_columns: numeric feature columns (instead of text); default every column but
            the label and id columns of the training file when no text column is given. The
            other files are read by these names (any column order; extra columns ignored).
        label_column: the column of class labels (strings or integers).
        id_column: a column of unique integer ids; default the row number in the file.
        classes: the class names in index order; default the sorted distinct training labels.
        drop_labels: label values whose rows are dropped and counted (SNLI's ``-`` marks pairs
            without annotator consensus); any other missing or unknown label is an error.
    """

    def __init__(
        self,
        train: str,
        val: str | None = None,
        test: str | None = None,
        control: str | Mapping[str, str] | None = None,
        text_columns: str | Sequence[str] | None = None,
        feature_columns: Sequence[str] | None = None,
        label_column: str = "label",
        id_column: str | None = None,
        classes: Sequence[Any] | None = None,
        drop_labels: Sequence[Any] = (),
    ) -> None:
        # every list option: a bare value is a list of one (drop_labels=xx is [xx]); see
        # datamap.data.options and docs/own-data.md
        self.text_columns = column_names(text_columns, "data.source.text_columns")
        if self.text_columns is not None and len(self.text_columns) not in (1, 2):
            raise ConfigError(
                f"data.source.text_columns must name one text column, or two for sentence "
                f"pairs, got {self.text_columns}"
            )
        self.feature_columns = column_names(feature_columns, "data.source.feature_columns")
        if self.text_columns is not None and self.feature_columns is not None:
            raise ConfigError("set data.source.text_columns or data.source.feature_columns, "
                              "not both: text and numeric inputs are different models")
        if self.feature_columns is not None and not self.feature_columns:
            raise ConfigError("data.source.feature_columns is an empty list; name the feature "
                              "columns, or set it to null for every column but label and id")
        self.files = {"train": train, "val": val, "test": test}
        self.controls = named_paths(control, "control")
        self.label_column = column_name(label_column, "data.source.label_column")
        if self.label_column is None:
            raise ConfigError("data.source.label_column is not set; name the column of class "
                              "labels, e.g. data.source.label_column=label")
        self.id_column = column_name(id_column, "data.source.id_column")
        check_roles(self.label_column, self.id_column, self.text_columns, self.feature_columns)
        self.classes = (class_names_of([], classes) if as_list(classes, "data.source.classes")
                        is not None else None)
        self.drop_labels = set(config_labels(as_list(drop_labels, "data.source.drop_labels")
                                             or [], "data.source.drop_labels"))

    def load(self) -> SourceData:
        splits: dict[str, RawData] = {}
        dropped: dict[str, int] = {}
        class_names = features = None
        for split, file in self.files.items():
            if file is None:
                continue
            raw, dropped[split], features = self._load_file(
                Path(file), f"data.source.{split}", class_names, features)
            class_names = class_names or raw.class_names  # the training file's classes
            splits[split] = raw
        controls = {}
        descriptions = {}
        for name, file in self.controls.items():
            key = "data.source.control" + (f".{name}" if len(self.controls) > 1 or
                                           name != "control" else "")
            controls[name], count, _ = self._load_file(Path(file), key, class_names, features)
            descriptions[name] = f"{Path(file).name}: {len(controls[name])} rows" + (
                f" ({count} dropped for their label)" if count else "")
        train = splits["train"]
        kind = "text pairs" if train.text_pair is not None else (
            "texts" if train.input_kind == TEXT else f"{train.input_shape[0]} numeric features")
        return SourceData(
            train=train, val=splits.get("val"), test=splits.get("test"), controls=controls,
            control_descriptions=descriptions, dropped={k: v for k, v in dropped.items() if v},
            description=f"{Path(self.files['train']).name}: {kind}",
        )

    # ------------------------------------------------------------------------------------

    def _load_file(self, path: Path, key: str, class_names: list[str] | None,
                   features: list[str] | None) -> tuple[RawData, int, list[str] | None]:
        """One file -> its examples (labels on ``class_names``, features the columns
        ``features``, when given: the training file's), the number of rows dropped for their
        label and the feature columns read (None for texts)."""
        frame = read_frame(path, key)
        where = str(path)
        columns = ", ".join(frame.columns)
        unnamed = frame.attrs.get("unnamed_columns") or {}
        if unnamed and features is None and self.text_columns is None \
                and self.feature_columns is None:
            position, name = next(iter(unnamed.items()))
            raise DataError(
                f"{where}: column {position} has no name in the header (pandas calls it "
                f"{name!r}; an index written by to_csv?), and with data.source.feature_columns "
                "unset every column but the label and id is a feature, this one too: remove it "
                "(to_csv(index=False)), name it, or list the features in "
                "data.source.feature_columns"
            )
        if self.label_column not in frame.columns:
            raise DataError(f"{where}: no label column {self.label_column!r} (columns: "
                            f"{columns}); set data.source.label_column")
        if self.id_column is not None and self.id_column not in frame.columns:
            raise DataError(f"{where}: no id column {self.id_column!r} (columns: {columns}); "
                            "set data.source.id_column, or leave it unset to number rows")

        # ids first, from the whole file: dropping rows must not renumber the others
        ids = self._ids(frame, path)
        labels = label_strings(
            # numpy scalars keep their width: a float32 label is checked against float32's
            # limit of exact integers, not float64's
            exact_values(frame[self.label_column]),
            lambda i: f"{where}: label column {self.label_column!r} at {row_name(path, i)}")
        keep = ~np.isin(labels, list(self.drop_labels)) if self.drop_labels else np.ones(
            len(frame), dtype=bool)
        n_dropped = int((~keep).sum())
        positions = np.flatnonzero(keep)
        if len(positions) == 0:
            raise DataError(f"{where}: every row's label is in data.source.drop_labels; "
                            "nothing is left")
        empty = positions[labels[positions] == ""]
        if len(empty):
            raise DataError(
                f"{where}: {len(empty)} row(s) have no label in column {self.label_column!r} "
                f"(first at {row_name(path, int(empty[0]))}); fill them in, remove those rows, "
                "or list the value in data.source.drop_labels"
            )
        frame = frame.iloc[positions]
        labels = labels[positions]
        ids = ids[positions]
        check_one_kind(labels.tolist(), f"{where}: label column {self.label_column!r}",
                       "fix the stray labels, or list them in data.source.drop_labels")

        own = class_names_of(labels, self.classes)
        inputs = self._inputs(frame, path, positions, features)
        features = inputs.pop("features", None)
        raw = RawData(labels=encode_labels(labels, own, where), ids=ids, class_names=own,
                      origin=where, **inputs)
        if class_names is not None:  # a val/test/control file: onto the training classes
            raw = raw.relabel(class_names, f"the training data ({self.files['train']})")
        return raw, n_dropped, features

    def _ids(self, frame: pd.DataFrame, path: Path) -> np.ndarray:
        if self.id_column is None:
            return np.arange(len(frame), dtype=np.int64)
        column = frame[self.id_column]
        ids = canonical_ids(
            exact_values(column),
            lambda i: f"{path}: id column {self.id_column!r} must hold integers, got "
                      f"{column.iloc[i]!r} at {row_name(path, i)}",
            "fix it, or leave data.source.id_column unset to number rows in file order")
        check_unique_ids(ids, str(path), f"column {self.id_column!r}")
        return ids

    def _inputs(self, frame: pd.DataFrame, path: Path, positions: np.ndarray,
                training_features: list[str] | None) -> dict[str, Any]:
        """The input columns of the kept rows: texts, or float32 features (with the names of
        their columns: ``training_features`` when given, looked up by name)."""
        columns = ", ".join(frame.columns)
        if self.text_columns is not None:
            missing = [c for c in self.text_columns if c not in frame.columns]
            if missing:
                raise DataError(f"{path}: no text column(s) {', '.join(map(repr, missing))} "
                                f"(columns: {columns}); set data.source.text_columns")
            texts = [self._texts(frame[c], path, c, positions) for c in self.text_columns]
            return {"text": texts[0], "text_pair": texts[1] if len(texts) == 2 else None,
                    "input_kind": TEXT}
        if training_features is not None:
            # every other file is read by the training file's column names, whatever its
            # column order; its extra columns are no input the model was trained on
            missing = [c for c in training_features if c not in frame.columns]
            if missing:
                raise DataError(
                    f"{path}: no feature column(s) {', '.join(map(repr, missing))} of the "
                    f"training file {self.files['train']} (columns: {columns}); every file "
                    "needs the training file's feature columns, matched by name: add them, or "
                    "list the columns the files share in data.source.feature_columns"
                )
        reserved = {self.label_column, self.id_column}
        features = training_features or self.feature_columns or [
            c for c in frame.columns if c not in reserved]
        missing = [c for c in features if c not in frame.columns]
        if missing:
            raise DataError(f"{path}: no feature column(s) {', '.join(map(repr, missing))} "
                            f"(columns: {columns}); set data.source.feature_columns")
        if not features:
            raise DataError(f"{path}: no input columns besides the label; set "
                            "data.source.text_columns or data.source.feature_columns")
        x = np.empty((len(frame), len(features)), dtype=np.float32)
        for j, name in enumerate(features):
            x[:, j] = self._numbers(frame[name], path, name, positions)
        return {"x": x, "input_kind": "tabular", "features": features}

    def _numbers(self, column: pd.Series, path: Path, name: str,
                 positions: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):  # beyond float32's range is infinite: refused below
            values = feature_values(column).astype(np.float32)
        bad = ~np.isfinite(values)
        if bad.any():
            first = int(np.argmax(bad))
            hint = ("; for a text column set data.source.text_columns instead"
                    if not pd.api.types.is_numeric_dtype(column)
                    or pd.api.types.is_bool_dtype(column) else "")
            raise DataError(
                f"{path}: feature column {name!r} has {int(bad.sum())} non-numeric, missing, "
                f"boolean or infinite (beyond float32's ±3.4e38) value(s) (first "
                f"{column.iloc[first]!r} at "
                f"{row_name(path, int(positions[first]))}); features must be finite numbers: "
                f"fix the values or leave the column out of data.source.feature_columns{hint}"
            )
        return values

    def _texts(self, column: pd.Series, path: Path, name: str,
               positions: np.ndarray) -> np.ndarray:
        values = column.tolist()
        # a text cell is text: CSV/TSV cells always are; a JSON/Parquet number, list or null in
        # a text column has no single spelling (1e-05 or 0.00001?), so it is refused
        odd = [i for i, v in enumerate(values) if not isinstance(v, str)]
        if odd:
            raise DataError(
                f"{path}: text column {name!r} holds {len(odd)} value(s) that are not text "
                f"(first {values[odd[0]]!r} at {row_name(path, int(positions[odd[0]]))}); store "
                "the column as strings (quote them in JSON lines), or remove those rows"
            )
        texts = np.asarray(values, dtype=object)
        empty = np.flatnonzero([not t.strip() for t in texts.tolist()])
        if len(empty):
            raise DataError(
                f"{path}: {len(empty)} row(s) have an empty text in column {name!r} (first at "
                f"{row_name(path, int(positions[empty[0]]))}); fill them in or remove those rows"
            )
        return texts


def feature_values(column: pd.Series) -> np.ndarray:
    """A feature column as float64, NaN where a value is no number.

    The one rule for every format: a number (int or float, never a boolean) is its value, and
    a string is a number only when it is in decimal notation (``[+-]digits[.digits]``, optional
    exponent, surrounding spaces ignored); ``1,5``, ``0x10``, ``true``, an empty cell and a
    missing value are not numbers (the caller refuses them, as it does infinities).
    """
    if pd.api.types.is_bool_dtype(column):
        return np.full(len(column), np.nan)
    if pd.api.types.is_numeric_dtype(column):
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    out = np.full(len(column), np.nan)
    for i, value in enumerate(column.tolist()):
        if isinstance(value, (bool, np.bool_)) or value is None:
            continue
        if isinstance(value, (int, float, np.integer, np.floating)):
            out[i] = float(value)
        elif isinstance(value, str) and NUMBER.fullmatch(value.strip()):
            out[i] = float(value.strip())
    return out


def check_roles(label_column: str, id_column: str | None, text_columns: list[str] | None,
                feature_columns: list[str] | None) -> None:
    """Refuse a column given two roles: an input (text or feature) that is also the label or
    the id -- the model would learn its own answer -- or an id that is also the label.

    Parameters
    ----------
    label_column : str
        ``data.source.label_column``.
    id_column : str or None
        ``data.source.id_column``.
    text_columns, feature_columns : list of str or None
        ``data.source.text_columns`` and ``data.source.feature_columns``.

    Raises
    ------
    ConfigError
        Naming both options and the column.
    """
    roles = {"data.source.label_column": [label_column]}
    if id_column is not None:
        roles["data.source.id_column"] = [id_column]
    for key, columns in (("data.source.text_columns", text_columns),
                         ("data.source.feature_columns", feature_columns)):
        if columns:
            roles[key] = columns
    keys = list(roles)
    for i, first in enumerate(keys):
        for second in keys[i + 1:]:
            shared = [c for c in roles[first] if c in roles[second]]
            if shared:
                raise ConfigError(
                    f"column {shared[0]!r} is both {first} and {second}; a column has one role "
                    "(an input cannot be the label or the id): name another column for one "
                    "of them"
                )

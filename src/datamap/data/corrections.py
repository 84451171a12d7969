"""Reviewers' decisions fed back into the data: ``data/corrections.csv``.

The corrections file (``data.corrections``, null switches it off) is a git-tracked CSV (RFC
4180) with the header ``id,action,label,note,reviewer``: ``id`` and ``action`` are required
columns, ``label``, ``note`` and ``reviewer`` optional ones, in any order. One row per example:

* ``relabel``: the example gets the class ``label`` (a class name of ``meta.json``, read by the
  canonical-label rule of :mod:`datamap.data.labels`);
* ``drop``: the example leaves the data;
* ``keep``: the example was reviewed and its label is right (``label`` empty, as for drop).

The prepare stage applies the file after the splits and the label noise are made (so the same
examples are flipped with and without corrections) to whichever split holds each id, counts
each action in ``meta.json`` (train and val; the test split's counts are in its own file's
metadata, since ``meta.json`` is a dependency of training) and writes the decisions it applied
to ``corrections.parquet`` in the prepared directory (:func:`read_applied_corrections`, a
DataFrame for the interactive page and the review queue).

How a file is read, so that no value is read two ways: the text is UTF-8 (a leading byte-order
mark is dropped); cells are taken exactly as written (no trimming); a line with no cell at all
is skipped; ``id`` is a base-10 integer (ASCII digits, an optional ``-``; leading zeros are
ignored, ``007`` is 7; ``7.0``, ``1e3`` or `` 7`` are refused); ``action`` is one of the three
words in lower case; a label is read by the rule of every data file's labels
(:mod:`datamap.data.labels`, ``docs/own-data.md``: ``1.0`` is the class ``1``, `` cat`` is
``cat``) and must then be one of the class names. Anything else is refused in one line
naming the file, the line and the fix.

The spreadsheet-formula guard, one rule for every writer and reader of the file (this module,
the Label Studio import, the interactive page's download): a ``label``, ``note`` or
``reviewer`` cell that starts with ``=``, ``+``, ``-``, ``@``, a tab, a carriage return (what a
spreadsheet reads as a formula) or ``'``, and is not a negative integer such as ``-1``
(which a spreadsheet reads, and saves, as the same number), is written with one extra leading ``'``
(:func:`guard_cell`); the reader removes one leading ``'`` when the character after it is one
of those seven (:func:`unguard_cell`). Every value round-trips exactly (a class named ``-`` or
``=x`` is written ``'-``, ``'=x`` and read back as ``-``, ``=x``; ``'x`` is written ``''x``);
a hand-written ``'x`` (quote, then a letter) is read as ``'x``. ``id`` and ``action`` cells are
never guarded: an id is digits with an optional ``-``, an action one of three words.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from datamap.data.labels import canonical_label
from datamap.errors import DataError

# the spreadsheet guard is one rule for every CSV datamap writes for people: it lives in io
from datamap.io import (  # noqa: F401
    GUARDED_STARTS,
    guard_cell,
    read_parquet,
    unguard_cell,
    write_text,
)

#: The actions a row can take.
ACTIONS = ("relabel", "drop", "keep")
#: The columns of a corrections file, in the order datamap writes them.
COLUMNS = ("id", "action", "label", "note", "reviewer")
REQUIRED_COLUMNS = ("id", "action")
#: The applied decisions' file in the prepared directory.
APPLIED_FILE = "corrections.parquet"
#: Its schema: ``label_after`` is null for a drop; ``note`` and ``reviewer`` are "" when empty.
APPLIED_SCHEMA = pa.schema([
    ("id", pa.int64()), ("split", pa.string()), ("action", pa.string()),
    ("label_before", pa.string()), ("label_after", pa.string()), ("note", pa.string()),
    ("reviewer", pa.string()),
])
#: The splits a decision can apply to, in the order they are searched and reported.
SPLITS = ("train", "val", "test")
#: The names each action is counted under in ``meta.json`` and the cartography summary.
COUNT_NAMES = {"relabel": "relabelled", "drop": "dropped", "keep": "kept"}

#: The columns whose cells are guarded (free text; ids and actions cannot start a formula).
GUARDED_COLUMNS = ("label", "note", "reviewer")

#: An id as a corrections file (or the review queue) writes it: base-10 ASCII digits.
INTEGER = re.compile(r"-?[0-9]+", re.ASCII)
_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class Decision:
    """One reviewed example: ``action`` on ``id`` (``label``: the new class of a relabel, ""
    otherwise). ``line`` is the file line it was read from (0 when not from a file)."""

    id: int
    action: str
    label: str = ""
    note: str = ""
    reviewer: str = ""
    line: int = field(default=0, compare=False)

    def describe(self) -> str:
        return f"relabel to {self.label!r}" if self.action == "relabel" else self.action


@dataclass(frozen=True)
class Corrections:
    """The decisions of one corrections file, in file order (one per id). ``origin`` names the
    file in messages; ``crlf`` says it ended its lines with CRLF (kept when it is rewritten)."""

    decisions: tuple[Decision, ...] = ()
    origin: str = "corrections"
    crlf: bool = False

    def __len__(self) -> int:
        return len(self.decisions)


# --------------------------------------------------------------------------------------------
# the file


def parse_corrections(text: str, origin: str) -> Corrections:
    """Read the text of a corrections file (see the module docstring for the rules).

    Parameters
    ----------
    text : str
        The file's text (a leading byte-order mark is ignored).
    origin : str
        How messages name the file, e.g. ``data/corrections.csv (data.corrections)``.

    Returns
    -------
    Corrections
        The decisions in file order, checked for form: known columns and actions, integer ids,
        a label exactly for relabel, one row per id. Whether the ids and labels exist in the
        data is checked when they are applied (:func:`apply_corrections`).
    """
    text = text.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, list[str]]] = []  # (the line a row starts on, its cells)
    start = 1
    try:
        for cells in reader:
            if cells:  # not a blank line
                rows.append((start, cells))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{origin} line {start}: not valid CSV ({exc}); quote cells that hold "
                        "commas, quotes or line breaks (RFC 4180)") from exc
    if not rows:
        raise DataError(f"{origin}: the file is empty; its first line must be the header "
                        "id,action,label (a header alone means no corrections)")
    _, header = rows[0]
    columns = _check_header(header, origin)
    first_end = text.find("\n")
    crlf = first_end > 0 and text[first_end - 1] == "\r"
    decisions: list[Decision] = []
    first_line: dict[int, Decision] = {}
    for line, cells in rows[1:]:
        if len(cells) != len(header):
            raise DataError(f"{origin} line {line}: {len(cells)} cell(s), the header has "
                            f"{len(header)}; quote cells that hold commas (RFC 4180)")
        values = dict(zip(header, cells, strict=True))
        decision = _decision(values, columns, line, origin)
        earlier = first_line.get(decision.id)
        if earlier is not None:
            if earlier == decision:
                raise DataError(f"{origin} lines {earlier.line} and {line}: id {decision.id} "
                                "is decided twice (the same row); keep one row per id")
            raise DataError(f"{origin} lines {earlier.line} and {line}: conflicting decisions "
                            f"for id {decision.id} ({earlier.describe()}, {decision.describe()})"
                            "; keep one row per id")
        first_line[decision.id] = decision
        decisions.append(decision)
    return Corrections(tuple(decisions), origin, crlf=crlf)


def _check_header(header: list[str], origin: str) -> set[str]:
    seen: set[str] = set()
    for name in header:
        if name not in COLUMNS:
            raise DataError(f"{origin}: unknown column {name!r} in the header (known: "
                            f"{', '.join(COLUMNS)}); fix the header line")
        if name in seen:
            raise DataError(f"{origin}: column {name!r} appears twice in the header")
        seen.add(name)
    for name in REQUIRED_COLUMNS:
        if name not in seen:
            raise DataError(f"{origin}: no {name!r} column (header: {','.join(header)}); the "
                            "header must name id and action, and may name label, note and "
                            "reviewer")
    return seen


def _decision(values: Mapping[str, str], columns: set[str], line: int,
              origin: str) -> Decision:
    raw_id = values["id"]
    if not INTEGER.fullmatch(raw_id) or not _INT64[0] <= int(raw_id) <= _INT64[1]:
        raise DataError(f"{origin} line {line}: id {raw_id!r} is not an integer; write the "
                        "example's id as the review queue shows it (e.g. 17)")
    example = int(raw_id)
    action = values["action"]
    if action not in ACTIONS:
        raise DataError(f"{origin} line {line}: unknown action {action!r} for id {example}; "
                        f"use one of {', '.join(ACTIONS)}")
    label = unguard_cell(values.get("label", ""))
    if action == "relabel" and label == "":
        raise DataError(f"{origin} line {line}: relabel of id {example} has no label; give "
                        "the new class name in the label column")
    if action != "relabel" and label != "":
        raise DataError(f"{origin} line {line}: {action} of id {example} has a label "
                        f"({label!r}); leave the label empty for drop and keep (only relabel "
                        "sets one)")
    return Decision(example, action, label, unguard_cell(values.get("note", "")),
                    unguard_cell(values.get("reviewer", "")), line)


def read_corrections(path: str | os.PathLike, key: str = "data.corrections") -> Corrections:
    """Read and check a corrections file.

    Parameters
    ----------
    path : str or os.PathLike
        The file, e.g. ``data/corrections.csv``.
    key : str
        The config key that named it, for messages.

    Returns
    -------
    Corrections
        See :func:`parse_corrections`.
    """
    path = Path(path)
    origin = f"{path} ({key})"
    if not path.is_file():
        raise DataError(f"{origin}: file not found; create it with the header line "
                        f"id,action,label, or set {key}=null to use no corrections")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{origin}: not UTF-8 text (byte {exc.start}); save it as UTF-8") \
            from exc
    return parse_corrections(text, origin)


def format_corrections(decisions: Iterable[Decision], crlf: bool = False) -> str:
    """The text of a corrections file: the full header, then one row per decision (label, note
    and reviewer through :func:`guard_cell`; quoted where RFC 4180 needs it, as Python's
    ``csv`` module does; line ends LF, or CRLF when ``crlf``)."""
    end = "\r\n" if crlf else "\n"
    out = io.StringIO()
    # rows are written with CRLF and re-ended: with an LF terminator, Python's csv module leaves
    # a cell holding a lone CR unquoted, which every reader takes for a line end
    writer = csv.writer(out, lineterminator="\r\n")
    rows = [COLUMNS, *([d.id, d.action, guard_cell(d.label), guard_cell(d.note),
                        guard_cell(d.reviewer)] for d in decisions)]
    lines = []
    for row in rows:
        out.seek(0)
        out.truncate()
        writer.writerow(row)
        lines.append(out.getvalue()[:-2] + end)
    return "".join(lines)


def write_corrections(path: str | os.PathLike, decisions: Iterable[Decision],
                      crlf: bool = False) -> None:
    """Write a corrections file atomically (see :func:`format_corrections`)."""
    write_text(path, format_corrections(decisions, crlf))


def merge_decisions(old: Sequence[Decision], new: Sequence[Decision]
                    ) -> tuple[list[Decision], int]:
    """``old`` with ``new`` merged in: a new decision replaces the old one of its id in place,
    decisions on other ids follow in ``new``'s order. Returns (merged, how many were replaced).
    """
    incoming = {d.id: d for d in new}
    merged = [incoming.pop(d.id, d) for d in old]
    replaced = len(new) - len(incoming)
    merged.extend(d for d in new if d.id in incoming)
    return merged, replaced


# --------------------------------------------------------------------------------------------
# applying the decisions to the splits


@dataclass
class Applied:
    """What :func:`apply_corrections` made: the corrected ``splits``, the train split's
    ``clean_labels`` without the dropped examples, the applied decisions as a table
    (:data:`APPLIED_SCHEMA`) and ``counts`` {split: {relabel, drop, keep}}."""

    splits: dict[str, Any]
    clean_labels: np.ndarray | None
    table: pa.Table
    counts: dict[str, dict[str, int]]

    def metadata(self, splits: Sequence[str] = ("train", "val")) -> dict[str, Any]:
        """``{"corrections": {split: {action: count}}}`` of ``splits``, for ``meta.json`` (train
        and val) or the test file's metadata; {} when nothing was decided there, so that an
        empty corrections file changes no byte of the prepared data."""
        if not any(sum(self.counts[s].values()) for s in splits):
            return {}
        return {"corrections": {s: dict(self.counts[s]) for s in splits}}

    def describe(self) -> str:
        """The counts in words, for the log."""
        parts = [f"{split}: " + ", ".join(f"{n} {COUNT_NAMES[a]}" for a, n in counts.items())
                 for split, counts in self.counts.items() if sum(counts.values())]
        return "; ".join(parts) or "none"


def apply_corrections(corrections: Corrections | None, splits: Mapping[str, Any],
                      class_names: Sequence[str],
                      clean_labels: np.ndarray | None = None) -> Applied:
    """Apply the decisions to the splits that hold their ids.

    Parameters
    ----------
    corrections : Corrections or None
        The decisions (None: no corrections).
    splits : mapping
        ``train``, ``val``, ``test`` -> the split's examples
        (:class:`datamap.data.sources.RawData`: ``ids``, ``labels`` indexing ``class_names``,
        ``take``), the train split after label noise.
    class_names : sequence of str
        The classes; a relabel's label must be one of them, read by
        :func:`datamap.data.labels.canonical_label`.
    clean_labels : numpy.ndarray, optional
        The train split's labels before noise, aligned with its examples.

    Returns
    -------
    Applied
        The corrected splits (relabelled, without the dropped examples), the matching clean
        labels, the applied decisions sorted by id, and the counts per split and action.

    Raises
    ------
    DataError
        An id in no split, an id in more than one split (their ids overlap), a label that is
        not a class name, or decisions that empty the training split or leave a class without
        training examples.
    """
    corrections = corrections or Corrections()
    names = list(class_names)
    index = {name: i for i, name in enumerate(names)}
    origin = corrections.origin
    positions = {split: {int(i): p for p, i in enumerate(splits[split].ids)} for split in SPLITS}
    counts = {split: dict.fromkeys(ACTIONS, 0) for split in SPLITS}
    new_labels = {split: np.array(splits[split].labels, copy=True) for split in SPLITS}
    dropped: dict[str, list[int]] = {split: [] for split in SPLITS}
    rows = []
    for d in corrections.decisions:
        found = [split for split in SPLITS if d.id in positions[split]]
        where = f"{origin} line {d.line}" if d.line else origin
        if not found:
            raise DataError(f"{where}: id {d.id} is in no split of the data (train, val, "
                            "test); fix the id or remove the row")
        if len(found) > 1:
            raise DataError(f"{where}: id {d.id} is in the {' and '.join(found)} splits "
                            "(their files number their rows separately); give data.source an "
                            "id_column with ids unique across the files")
        split = found[0]
        # the label is a class name by the rule every data file's labels follow
        # (datamap.data.labels): "1.0" is the class 1, " cat" the class cat
        label = _class_name(d.label, where, d.id) if d.action == "relabel" else d.label
        if d.action == "relabel" and label not in index:
            shown = ", ".join(map(repr, names[:10])) + (", ..." if len(names) > 10 else "")
            raise DataError(f"{where}: relabel of id {d.id} to {d.label!r}, which is not a "
                            f"class name ({shown}); use one of the class names of meta.json")
        position = positions[split][d.id]
        before = names[int(new_labels[split][position])]
        after: str | None = before
        if d.action == "relabel":
            new_labels[split][position] = index[label]
            after = label
        elif d.action == "drop":
            dropped[split].append(position)
            after = None
        counts[split][d.action] += 1
        rows.append((d.id, split, d.action, before, after, d.note, d.reviewer))

    corrected = dict(splits)
    clean = clean_labels
    for split in SPLITS:
        data = splits[split]
        if not counts[split]["relabel"] and not dropped[split]:
            continue
        data = replace(data, labels=new_labels[split])
        if dropped[split]:
            keep = np.setdiff1d(np.arange(len(data.ids)), dropped[split])
            if split == "train" and not len(keep):
                raise DataError(f"{origin}: drops every training example; keep some")
            data = data.take(keep)
            if split == "train" and clean is not None:
                clean = np.asarray(clean)[keep]
        corrected[split] = data
    before, after = set(np.unique(splits["train"].labels)), set(np.unique(
        corrected["train"].labels))
    if before - after:
        lost = ", ".join(repr(names[int(i)]) for i in sorted(before - after))
        raise DataError(f"{origin}: the decisions leave no training example of class {lost}; a "
                        "model cannot learn a class it never sees: keep some of its examples")
    rows.sort(key=lambda row: row[0])
    table = pa.Table.from_pylist([dict(zip(APPLIED_SCHEMA.names, row, strict=True))
                                  for row in rows], schema=APPLIED_SCHEMA)
    return Applied(corrected, clean, table, counts)


# --------------------------------------------------------------------------------------------
# reading the applied decisions (the cartography stage, the interactive page)


def read_applied_corrections(prepared_dir: str | os.PathLike) -> Any:
    """The decisions the prepare stage applied, as a pandas DataFrame.

    Parameters
    ----------
    prepared_dir : str or os.PathLike
        The prepared directory (``data/prepared``).

    Returns
    -------
    pandas.DataFrame
        One row per decided example, sorted by id: ``id`` (int64), ``split`` (train, val or
        test), ``action`` (relabel, drop or keep), ``label_before`` (the class name the
        example had, after label noise), ``label_after`` (its class name now; None for a
        drop), ``note`` and ``reviewer`` (strings, "" when the file left them empty). Empty
        (with these columns) when nothing was decided.
    """
    path = Path(prepared_dir) / APPLIED_FILE
    table = read_parquet(path, required=APPLIED_SCHEMA.names, what="applied corrections",
                         hint="rerun the prepare stage")
    return table.select(APPLIED_SCHEMA.names).to_pandas()


def summary_counts(meta: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """The corrections ``meta.json`` counts, as the cartography summary reports them:
    {split: {reviewed, relabelled, dropped, kept}} for the train and val splits (zeros when
    nothing was decided)."""
    recorded = meta.get("corrections") or {}
    out = {}
    for split in ("train", "val"):
        counts = recorded.get(split, {})
        out[split] = {"reviewed": int(sum(counts.get(a, 0) for a in ACTIONS)),
                      **{COUNT_NAMES[a]: int(counts.get(a, 0)) for a in ACTIONS}}
    return out


def _class_name(label: str, where: str, example: int) -> str:
    """A relabel's label as a class name (:func:`datamap.data.labels.canonical_label`)."""
    try:
        return canonical_label(label)
    except ValueError as exc:
        raise DataError(f"{where}: relabel of id {example} to {label!r}: the label {exc}; "
                        "use one of the class names of meta.json") from None

"""Markdown tables, the one plain-text table format datamap writes (``summary.md``, the score
table, tables sent to TensorBoard).

A cell holds data (a class name, an example's text, a control set's description) or markup the
code wrote itself. Data is escaped so that a renderer (GitHub, mkdocs, TensorBoard) shows it as
the text it is: a label ``<img onerror=...>`` stays those characters, not an element; ``[x](...)``
is not a link; a ``|`` or a backslash does not move the table's columns. Markup the code wrote
is marked with :class:`Markup` and only kept on one line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


class Markup(str):
    """Markdown written by datamap itself (a code span, a formatted number): kept as it is."""


#: Data characters a markdown renderer would read as markup -> what shows them as themselves.
#: The backslash first, so that the escapes added after it are not escaped again; ``&``, ``<``
#: and ``>`` as entities (raw HTML passes through markdown, and not every renderer honours a
#: backslash before ``<``); the rest with CommonMark's backslash escape.
_ESCAPES = {"\\": "\\\\", "&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "\\|", "`": "\\`",
            "*": "\\*", "[": "\\[", "]": "\\]"}
_TABLE = str.maketrans(_ESCAPES)


def one_line(text: str) -> str:
    """``text`` with every line break as a space (a table row is one line)."""
    return text.replace("\r", " ").replace("\n", " ").replace("\u2028", " ").replace(
        "\u2029", " ")


def escape(value: Any) -> str:
    """``value`` as markdown text that renders as exactly its characters, on one line
    (:class:`Markup` only kept on one line, a table's ``|`` still escaped)."""
    if isinstance(value, Markup):
        return one_line(str(value))
    return one_line(str(value).translate(_TABLE))


def cell(value: Any) -> str:
    """``value`` as one table cell: data escaped (:func:`escape`), markup with its pipes
    escaped, line breaks as spaces."""
    if isinstance(value, Markup):
        return one_line(str(value).replace("|", "\\|"))
    return escape(value)


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]],
                   align: Sequence[str] | None = None) -> str:
    """A markdown table of ``rows`` under ``header``, every cell through :func:`cell`.

    ``align``: one of ``"left"``, ``"right"`` per column (default: no alignment marks).
    """
    marks = {"left": ":---", "right": "---:", None: "---"}
    rule = [marks[a] for a in align] if align is not None else ["---"] * len(header)
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)

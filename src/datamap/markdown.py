"""Markdown tables, the one plain-text table format datamap writes (``summary.md``, the score
table, tables sent to TensorBoard)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def cell(value: Any) -> str:
    """``value`` as one table cell: pipes escaped, line breaks as spaces."""
    return str(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


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

"""The README stays short and its links resolve.

The reference lives in docs/ (built by ``make docs``: ``mkdocs build --strict`` fails on a broken
link between pages); the README is the front page a newcomer reads on a fresh clone, so every
relative link in it must point at a file of the repository.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from .helpers import ROOT

README = ROOT / "README.md"
MAX_LINES = 250

#: Pages written on other branches that the README links to already. A page here is checked like
#: any other as soon as it exists; remove it from this set once it is merged.
PENDING_PAGES: set[str] = set()

# [text](target) and ![alt](target); an optional "title" after the target is dropped
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def relative_links(markdown: str) -> list[str]:
    """The relative link targets of ``markdown`` (no URL scheme, no bare ``#anchor``), without
    their ``#fragment``, outside fenced code blocks.

    Parameters
    ----------
    markdown : str
        The Markdown text.
    """
    prose = re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL)
    prose = re.sub(r"`[^`\n]*`", "", prose)  # inline code: commands, not links
    targets = []
    for target in LINK.findall(prose):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
            continue
        targets.append(unquote(target.split("#", 1)[0]))
    return targets


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < MAX_LINES, f"README.md has {len(lines)} lines: move reference to docs/"


def test_readme_links_point_at_files():
    links = relative_links(README.read_text(encoding="utf-8"))
    assert links, "README.md links to no file: it should lead into docs/"
    missing = [link for link in links
               if not (ROOT / link).exists() and Path(link).as_posix() not in PENDING_PAGES]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_link_finder_sees_links_and_skips_code_and_urls():
    text = ("see [a](docs/a.md#x), ![img](docs/images/i.png \"t\") and [web](https://x.org)\n"
            "`[not](code.md)`\n```\n[no](fenced.md)\n```\n[anchor](#top)\n")
    assert relative_links(text) == ["docs/a.md", "docs/images/i.png"]



def test_readme_figures_are_those_of_their_results_files():
    """Each figure the README's "Measured" table quotes is in the results file its row links
    (a rerun benchmark that changed a figure fails here until the README follows)."""
    import re

    text = README.read_text(encoding="utf-8")
    table = text.split("## Measured", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines()
            if line.startswith("| ") and "benchmarks/results/" in line]
    assert len(rows) >= 4, table
    for row in rows:
        _, figures, results = [cell.strip() for cell in row.strip("|").split("|")]
        target = ROOT / re.search(r"\]\(([^)]+)\)", results).group(1)
        source = target.read_text(encoding="utf-8")
        numbers = re.findall(r"\d[\d,]*(?:\.\d+)?", figures)
        assert numbers, row
        missing = [n for n in numbers if n not in source]
        assert missing == [], f"{target.name} does not say {missing} (README: {figures})"

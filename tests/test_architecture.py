"""The package map of docs/architecture.md holds: no module imports a package its row does not
allow, and every package of src/datamap has a row."""

from __future__ import annotations

import re

from datamap.pipeline.deps import Sources

from .helpers import ROOT

SOURCES = Sources(ROOT)
DOC = ROOT / "docs" / "architecture.md"


def allowed_imports() -> dict[str, set[str] | None]:
    """package -> the packages it may import (None: every package), from the doc's table."""
    rows = {}
    for line in DOC.read_text().splitlines():
        match = re.fullmatch(r"\| `(\w+)` \| .* \|\s*([\w ,]*?)\s*\|", line)
        if match:
            allowed = match.group(2).strip()
            rows[match.group(1)] = None if allowed == "every package" else {
                p.strip() for p in allowed.split(",") if p.strip()}
    return rows


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "datamap"


def imports_by_package() -> dict[str, dict[str, set[str]]]:
    """package -> imported package -> the importing modules."""
    found: dict[str, dict[str, set[str]]] = {}
    for path in sorted((ROOT / "src" / "datamap").rglob("*.py")):
        module = SOURCES.module_name(path)
        source = package_of(module)
        if module == "datamap":  # the package itself: its version, lazy_attributes, errors
            assert SOURCES.direct_imports(path) == {"datamap.errors"}
            continue
        for imported in SOURCES.direct_imports(path):
            target = package_of(imported)
            if target not in (source, "datamap"):  # the package root: lazy_attributes, errors
                found.setdefault(source, {}).setdefault(target, set()).add(module)
    return found


def test_every_package_has_a_row():
    packages = {p.parent.name for p in (ROOT / "src" / "datamap").glob("*/__init__.py")}
    packages |= {p.stem for p in (ROOT / "src" / "datamap").glob("*.py") if p.stem != "__init__"}
    assert packages == set(allowed_imports())


def test_no_module_imports_a_package_its_row_does_not_allow():
    rules = allowed_imports()
    wrong = [f"{sorted(modules)[0]} imports {target}"
             for source, targets in imports_by_package().items()
             for target, modules in targets.items()
             if rules[source] is not None and target not in rules[source]]
    assert not wrong, "; ".join(wrong) + f" -- not allowed by {DOC.name}"


def test_the_rule_can_fail():
    # the analysis sees function-level imports: cartography imports scoring inside its stage
    # function, and it is listed; training never imports scoring
    found = imports_by_package()
    assert "scoring" in found["cartography"]
    assert "scoring" not in found["training"]
    assert allowed_imports()["errors"] == set()


def test_nothing_in_src_imports_the_stage_scripts():
    for path in (ROOT / "src").rglob("*.py"):
        assert not any(m.split(".")[0] == "stages" for m in SOURCES.direct_imports(path)), path

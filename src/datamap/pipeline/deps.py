"""The code dependencies of every stage in ``dvc.yaml``, derived from the code itself.

A stage must list as ``deps`` exactly the source files it runs: a missing one leaves a stale
cached result after that file changes; an extra one reruns the stage for nothing. Nobody keeps
that list by hand: ``datamap deps`` writes it (between ``deps:`` and the stage's data deps) and
``datamap deps --check`` fails when it is not current (a test runs the check).

The files a stage runs are found statically: the stage script's imports, followed transitively
through the repository's own packages (imports inside functions count: they run when the stage
runs), the package ``__init__`` files Python executes on the way, names a package exports lazily
(its ``_EXPORTS`` literal), every module of a package that loads all of its modules
(``LOADS_EVERY_MODULE = True``, e.g. the logger adapters), and the modules of the ``_target_``
classes in the config sections the stage lists as params (Hydra instantiates them) -- under
every option of every config group, since ``dvc.yaml`` is the same whichever option a user picks
(``dvc exp run -S data=table`` must rerun ``prepare`` when the table reader changes). A
``_target_`` in a module of the repository outside ``src/`` (a user's own score or source)
counts the same way.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datamap.errors import ConfigError, DataError

#: Config sections a stage runs the ``_target_`` code of without listing them as params, and
#: why: evaluate rebuilds the retrained models from their checkpoints, which pickle the model's
#: constructors, so the model code runs there too (its config reaches evaluate through the
#: checkpoints, which are a dependency).
EXTRA_TARGETS = {"evaluate": ("model",)}
#: The comment that opens a stage's generated deps in dvc.yaml.
MARKER = "# code: written by `datamap deps`, do not edit"
_CODE = ("src/", "stages/")


@dataclass(frozen=True)
class Sources:
    """Where a repository's code lies: module ``a.b`` is ``<root>/src/a/b.py`` (or a package
    ``__init__.py``), or the same below the root itself."""

    root: Path

    @functools.cache  # noqa: B019 - a few instances per process, each small
    def module_file(self, module: str) -> Path | None:
        """The source file of a module or package of the repository; None for any other."""
        for base in (self.root / "src", self.root):
            stem = base.joinpath(*module.split("."))
            for candidate in (stem.with_suffix(".py"), stem / "__init__.py"):
                if candidate.is_file():
                    return candidate
        return None

    def module_name(self, path: Path) -> str:
        base = self.root / "src" if self.root / "src" in path.parents else self.root
        parts = path.relative_to(base).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    @functools.cache  # noqa: B019
    def package_constants(self, package: str) -> dict[str, Any]:
        """The literal top-level assignments of a package's ``__init__`` (``_EXPORTS``,
        ``LOADS_EVERY_MODULE``)."""
        path = self.module_file(package)
        if path is None or path.name != "__init__.py":
            return {}
        found = {}
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = [getattr(t, "id", None) for t in getattr(node, "targets", [])]
            if isinstance(node, ast.AnnAssign):
                targets = [getattr(node.target, "id", None)]
            for name in targets:
                if name in ("_EXPORTS", "LOADS_EVERY_MODULE"):
                    try:
                        found[name] = ast.literal_eval(node.value)
                    except ValueError:  # built from names: resolve them in the module
                        found[name] = _literal_with_names(node.value, path)
        return found

    def resolve(self, package: str, name: str) -> str:
        """The module that ``from package import name`` executes for ``name``."""
        submodule = f"{package}.{name}"
        if self.module_file(submodule) is not None:
            return submodule
        return self.package_constants(package).get("_EXPORTS", {}).get(name, package)

    @functools.cache  # noqa: B019
    def direct_imports(self, path: Path) -> frozenset[str]:
        """Modules of the repository a source file imports anywhere in its body."""
        package = self.module_name(path) if path.name == "__init__.py" else \
            self.module_name(path).rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = parts[: len(parts) - node.level + 1]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                if self.module_file(source) is None:
                    continue
                found.add(source)
                found.update(self.resolve(source, a.name) for a in node.names)
        return frozenset(m for m in found if self.module_file(m) is not None)

    def closure(self, modules: Iterable[str], files: Iterable[Path] = ()) -> set[Path]:
        """Every source file of the repository executed when ``files`` run and ``modules`` are
        imported."""
        seen: set[str] = set()
        todo = list(modules)
        for path in files:
            todo.extend(self.direct_imports(path))
        while todo:
            module = todo.pop()
            parts = module.split(".")
            for name in (".".join(parts[: i + 1]) for i in range(len(parts))):
                path = self.module_file(name)
                if name in seen or path is None:
                    continue
                seen.add(name)
                todo.extend(self.direct_imports(path))
                if self.package_constants(name).get("LOADS_EVERY_MODULE"):
                    todo.extend(f"{name}.{p.stem}" for p in sorted(path.parent.glob("*.py"))
                                if p.name != "__init__.py")
        return {self.module_file(m) for m in seen}

    def target_modules(self, node: Any, found: set[str] | None = None) -> set[str]:
        """The repository modules of every ``_target_`` below a config node."""
        found = set() if found is None else found
        if isinstance(node, Mapping):
            target = node.get("_target_")
            if isinstance(target, str) and "." in target:
                package, _, name = target.rpartition(".")
                while package and self.module_file(package) is None:  # Class.method
                    package, _, name = package.rpartition(".")
                if package:
                    found.add(self.resolve(package, name))
            for value in node.values():
                self.target_modules(value, found)
        elif isinstance(node, list):
            for value in node:
                self.target_modules(value, found)
        return found


def _literal_with_names(node: ast.AST, path: Path) -> Any:
    """A dict literal whose values are module-level string constants (``_SCORES = "..."``)."""
    names = {}
    for statement in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant):
            for target in statement.targets:
                if isinstance(target, ast.Name):
                    names[target.id] = statement.value.value

    def value(item: ast.AST) -> Any:
        if isinstance(item, ast.Name):
            return names[item.id]
        return ast.literal_eval(item)

    if not isinstance(node, ast.Dict):
        raise ValueError(f"{path}: _EXPORTS must be a dict literal")
    return {value(k): value(v) for k, v in zip(node.keys, node.values, strict=True)}


# --------------------------------------------------------------------------------------------
# dvc.yaml


def config_variants(root: Path) -> list[dict[str, Any]]:
    """The composition of ``conf/`` under its defaults and under every option of every config
    group (Hydra's own settings, the launchers, aside), unresolved."""
    from omegaconf import OmegaConf

    from datamap.pipeline.config import compose

    conf = root / "conf"
    variants = [OmegaConf.to_container(compose(conf), resolve=False)]
    for option in sorted(conf.rglob("*.yaml")):
        group = option.parent.relative_to(conf).as_posix()
        if group == "." or group.startswith("hydra/"):
            continue
        cfg = compose(conf, overrides=[f"{group}={option.stem}"])
        variants.append(OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False))
    return variants


def _section(params: Mapping[str, Any], key: str) -> Any:
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def stage_script(root: Path, cmd: str) -> Path:
    match = re.search(r"python -m (stages\.\w+)", cmd)
    if not match:
        raise ConfigError(f"dvc.yaml: cannot find the stage script (python -m stages.X) in "
                          f"{cmd!r}")
    return root / (match.group(1).replace(".", "/") + ".py")


def stage_code(root: Path, name: str, body: Mapping[str, Any],
               variants: list[dict[str, Any]], sources: Sources) -> set[Path]:
    """Every source file the stage ``name`` (its dvc.yaml ``body``) runs."""
    sections = [str(p).split(".${")[0] for p in body.get("params", []) if isinstance(p, str)]
    sections += EXTRA_TARGETS.get(name, ())
    roots: set[str] = set()
    for params in variants:
        for key in sections:
            sources.target_modules(_section(params, key), roots)
    script = stage_script(root, str(body["cmd"]))
    return {script, *sources.closure(roots, [script])}


def dep_entries(root: Path, files: set[Path]) -> list[str]:
    """``files`` as dvc.yaml deps: the stage script first, then a package directory wherever
    the stage runs every module of it (recursively), else the files, sorted."""
    rel = {f.relative_to(root).as_posix() for f in files}
    scripts = sorted(r for r in rel if r.startswith("stages/"))
    tops = {root / "src", root} | {p.parent for p in (root / "src").glob("*/__init__.py")}
    entries: set[str] = set()
    for path in sorted(r for r in rel if not r.startswith("stages/")):
        # the outermost package below the top-level one whose every module the stage runs
        best, directory = None, (root / path).parent
        while directory not in tops and directory != directory.parent:
            if {p.relative_to(root).as_posix() for p in directory.rglob("*.py")} <= rel:
                best = directory
            directory = directory.parent
        entries.add(best.relative_to(root).as_posix() if best is not None else path)
    return scripts + sorted(entries)


def expected_deps(root: Path) -> dict[str, list[str]]:
    """Stage name (a foreach stage by its own name) -> its generated code deps."""
    import yaml

    text = (root / "dvc.yaml").read_text(encoding="utf-8")
    stages = (yaml.safe_load(text) or {}).get("stages") or {}
    variants = config_variants(root)
    sources = Sources(root)
    return {name: dep_entries(root, stage_code(root, name, stage.get("do", stage), variants,
                                                sources))
            for name, stage in stages.items()}


def rewrite(text: str, deps: Mapping[str, list[str]]) -> str:
    """``dvc.yaml``'s text with each stage's code deps replaced by ``deps[stage]``: the lines
    after the stage's ``deps:`` that name code (``src/``, ``stages/``) and the marker comment go;
    the generated ones come first, under the marker; data deps and their comments stay."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    stage = None
    in_stages = False
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if indent == 0 and stripped:
            in_stages = stripped == "stages:"
        elif in_stages and indent == 2 and stripped.endswith(":") and not stripped.startswith("#"):
            stage = stripped[:-1]
        if in_stages and stripped == "deps:" and stage in deps:
            out.append(line)
            item = " " * (indent + 2)
            i += 1
            rest: list[str] = []
            while i < len(lines) and (not lines[i].strip() or
                                      len(lines[i]) - len(lines[i].lstrip()) > indent):
                entry = lines[i].strip()
                if entry != MARKER and not (entry.startswith("- ") and
                                            entry[2:].strip().startswith(_CODE)):
                    rest.append(lines[i])
                i += 1
            out.append(f"{item}{MARKER}\n")
            out.extend(f"{item}- {dep}\n" for dep in deps[stage])
            out.extend(rest)
            continue
        out.append(line)
        i += 1
    return "".join(out)


def write_deps(root: str | Path = ".", check: bool = False) -> str | None:
    """Write the generated code deps into ``root/dvc.yaml``; with ``check``, only return a
    message naming the stages whose deps are not current (None when all are)."""
    root = Path(root).resolve()
    path = root / "dvc.yaml"
    if not path.is_file():
        raise DataError(f"{path} not found; run from the project root")
    deps = expected_deps(root)
    text = path.read_text(encoding="utf-8")
    new = rewrite(text, deps)
    if not check:
        if new != text:
            from datamap.io import write_text

            write_text(path, new)
        return None
    if new == text:
        return None
    import yaml

    old_stages = yaml.safe_load(text)["stages"]
    stale = []
    for name, wanted in deps.items():
        body = old_stages[name].get("do", old_stages[name])
        listed = [d for d in body.get("deps", []) if isinstance(d, str) and d.startswith(_CODE)]
        if listed != wanted:
            missing = sorted(set(wanted) - set(listed))
            extra = sorted(set(listed) - set(wanted))
            stale.append(f"{name} (missing: {', '.join(missing) or '-'}; not run: "
                         f"{', '.join(extra) or '-'})")
    detail = "; ".join(stale) or "layout of the generated lines"
    return f"{path}: code deps are not current: {detail}; run `datamap deps` to rewrite them"

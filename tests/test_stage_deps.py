"""dvc.yaml follows the code: every stage depends on exactly the datamap modules it runs, and
every plot is a file DVC can find without its cache.

For each stage, the modules are found statically from the source: the stage script's imports,
followed transitively through ``src/datamap`` (imports inside functions count: they run when the
stage runs), the package ``__init__`` files Python executes on the way, names a package exports
lazily (``_EXPORTS``), and the modules of the ``_target_`` classes in the config sections the
stage lists as params (Hydra instantiates them) -- under every option of every config group,
since dvc.yaml is the same whichever option a user picks (`dvc exp run -S data=table` must
rerun `prepare` when the table reader changes). A stage whose ``deps`` miss one of them would
keep a stale cached result after that module changes; a listed module it runs under no option
would rerun it for nothing.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest
import yaml

from .helpers import ROOT

SRC = ROOT / "src"
PACKAGE = "datamap"

#: Config sections a stage runs the ``_target_`` code of without listing them as params, and why.
EXTRA_TARGETS = {
    # evaluate rebuilds the retrained model from its checkpoint: the checkpoint pickles the
    # model's constructors, so the model code runs there too (its config reaches evaluate
    # through model.ckpt, which is a dependency).
    "evaluate": ("model",),
}


def module_file(module: str) -> Path | None:
    """The source file of a datamap module or package, None when it is not one."""
    base = SRC.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def lazy_exports(package: str) -> dict[str, str]:
    """A package's ``_EXPORTS`` (public name -> defining module), read from its source."""
    path = module_file(package)
    if path is None or path.name != "__init__.py":
        return {}
    for node in ast.parse(path.read_text()).body:
        targets = [getattr(t, "id", None) for t in getattr(node, "targets", [])]
        if isinstance(node, ast.AnnAssign):
            targets = [getattr(node.target, "id", None)]
        if "_EXPORTS" in targets:
            return ast.literal_eval(node.value)
    return {}


def resolve(package: str, name: str) -> str:
    """The module that ``from package import name`` executes for ``name``."""
    submodule = f"{package}.{name}"
    if module_file(submodule) is not None:
        return submodule
    return lazy_exports(package).get(name, package)


def with_parents(module: str) -> list[str]:
    """``a.b.c`` -> [a, a.b, a.b.c]: importing a module executes its packages' __init__ first."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@functools.cache
def direct_imports(path: Path) -> frozenset[str]:
    """datamap modules a source file imports anywhere in its body."""
    # the package a relative import starts from: the directory, for __init__.py and modules alike
    package = ".".join(path.parent.relative_to(SRC).parts) if SRC in path.parents else ""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            if source.split(".")[0] != PACKAGE:
                continue
            found.add(source)
            found.update(resolve(source, a.name) for a in node.names)
    return frozenset(m for m in found if module_file(m) is not None)


def closure(roots: set[str], start_files: list[Path]) -> set[Path]:
    """Every datamap source file executed when ``start_files`` run and ``roots`` are imported."""
    seen: set[str] = set()
    todo = list(roots)
    for path in start_files:
        todo.extend(direct_imports(path))
    while todo:
        module = todo.pop()
        for name in with_parents(module):
            if name in seen or module_file(name) is None:
                continue
            seen.add(name)
            todo.extend(direct_imports(module_file(name)))
    return {module_file(m) for m in seen}


def targets(node, found: set[str]) -> set[str]:
    """The datamap modules of every ``_target_`` below a config node."""
    if isinstance(node, dict):
        target = node.get("_target_")
        if isinstance(target, str) and target.split(".")[0] == PACKAGE:
            package, _, name = target.rpartition(".")
            while module_file(package) is None:  # a nested attribute: Class.method
                package, _, name = package.rpartition(".")
            found.add(resolve(package, name))
        for value in node.values():
            targets(value, found)
    elif isinstance(node, list):
        for value in node:
            targets(value, found)
    return found


def config_section(params: dict, key: str):
    node = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def load_stages() -> list[dict]:
    """Every stage of dvc.yaml as DVC resolves it (foreach expanded): name, cmd, deps, params."""
    import os

    from dvc.repo import Repo

    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    stages = []
    with Repo(str(ROOT)) as repo:
        for stage in repo.index.stages:
            deps, params = [], []
            for dep in stage.deps:
                if hasattr(dep, "params"):
                    params.extend(dep.params)
                else:
                    deps.append(str(dep.def_path))
            stages.append({"name": stage.addressing, "cmd": stage.cmd, "deps": deps,
                           "params": params})
    return stages


def config_variants() -> list[dict]:
    """params.yaml and the composition of every option of every config group."""
    from omegaconf import OmegaConf

    from datamap.config import compose

    variants = [yaml.safe_load((ROOT / "params.yaml").read_text())]
    conf = ROOT / "conf"
    for option in sorted(conf.rglob("*.yaml")):
        group = option.parent.relative_to(conf).as_posix()
        if group == "." or group.startswith("hydra/"):
            continue  # Hydra's own settings (launchers): not part of params.yaml
        cfg = compose(conf, overrides=[f"{group}={option.stem}"])
        variants.append(OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False))
    return variants


STAGES = load_stages()
VARIANTS = config_variants()


def stage_script(cmd: str) -> Path:
    match = re.search(r"python -m (stages\.\w+)", cmd)
    assert match, f"cannot find the stage script in {cmd!r}"
    return ROOT / (match.group(1).replace(".", "/") + ".py")


def expected_code(stage: dict) -> set[Path]:
    base = stage["name"].split("@")[0]
    sections = [*stage["params"], *EXTRA_TARGETS.get(base, ())]
    roots: set[str] = set()
    for params in VARIANTS:
        for key in sections:
            roots |= targets(config_section(params, key), set())
    script = stage_script(stage["cmd"])
    return {script, *closure(roots, [script])}


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


@pytest.mark.parametrize("stage", STAGES, ids=[s["name"] for s in STAGES])
def test_deps_cover_every_module_the_stage_runs(stage):
    missing = sorted(str(p.relative_to(ROOT)) for p in expected_code(stage)
                     if not covered(p, stage["deps"]))
    assert not missing, (
        f"stage {stage['name']} runs {', '.join(missing)} but dvc.yaml does not list "
        "them as deps: a change there would leave its cached outputs stale"
    )


@pytest.mark.parametrize("stage", STAGES, ids=[s["name"] for s in STAGES])
def test_deps_list_no_module_the_stage_does_not_run(stage):
    code = expected_code(stage)
    extra = []
    for dep in stage["deps"]:
        path = ROOT / dep
        if not dep.startswith(("src/", "stages/")):
            continue
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        if not any(f in code for f in files):
            extra.append(dep)
        elif path.is_file() and path not in code:
            extra.append(dep)
    assert not extra, (
        f"stage {stage['name']} lists {', '.join(extra)} in its deps but never runs that "
        "code: remove it so that changing it does not rerun the stage"
    )


def test_the_stage_package_runs_the_launcher_and_nothing_that_computes():
    # stages/__init__.py runs in every stage process before the stage script: it hands the
    # command to the preload server (datamap.preload), which decides where a stage runs, never
    # what it computes -- the same bytes either way, tested in test_pipeline_e2e.py -- so, like
    # the interpreter and DVC themselves, it is not a dependency of the stages' results. That
    # holds only while it imports no other datamap code than the package itself (whose
    # __init__ and io module every stage lists anyway).
    executed = closure(set(), [ROOT / "stages" / "__init__.py"])
    assert executed == {module_file(m) for m in ("datamap", "datamap.io", "datamap.preload")}
    assert direct_imports(module_file("datamap.preload")) == frozenset()
    for stage in STAGES:
        assert {"src/datamap/__init__.py", "src/datamap/io.py"} <= set(stage["deps"]), (
            stage["name"])


def test_the_import_analysis_sees_lazy_and_function_level_imports():
    # the analysis itself must be able to fail: the select stage ranks with the score registry
    # (imported by selection.py), and the train stage builds DynamicsRecorder through the lazy
    # export of datamap.dynamics from the dynamics config's _target_
    select = next(s for s in STAGES if s["name"].startswith("select@"))
    assert SRC / "datamap" / "score_registry.py" in expected_code(select)
    train = next(s for s in STAGES if s["name"] == "train")
    recorder = lazy_exports("datamap.dynamics")["DynamicsRecorder"]
    assert module_file(recorder) in expected_code(train)
    assert not covered(SRC / "datamap" / "report.py", train["deps"])


def test_top_level_plots_are_not_files_inside_directory_outs():
    # `dvc exp run` resolves every top-level plot before it commits an experiment; a plot inside
    # a directory out makes it load that directory's manifest from the cache, which a fresh
    # clone does not have ("failed to load directory"), even when the experiment never touches
    # that stage.
    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    dir_outs = set()
    with_stages = {**dvc_yaml["stages"]}
    for stage in with_stages.values():
        body = stage.get("do", stage)
        for out in body.get("outs", []):
            path = next(iter(out)) if isinstance(out, dict) else out
            if "." not in Path(path).name:
                dir_outs.add(Path(path))
    for plot in dvc_yaml.get("plots", []):
        path = Path(next(iter(plot)) if isinstance(plot, dict) else plot)
        inside = [str(d) for d in dir_outs if d in path.parents]
        assert not inside, f"top-level plot {path} lies inside the directory out {inside[0]}"

"""dvc.yaml follows the code: every stage depends on exactly the source files it runs (written
by `datamap deps`, see datamap.pipeline.deps), and every plot is a file DVC can find without its
cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from datamap.pipeline.deps import MARKER, Sources, expected_deps, write_deps

from .helpers import ROOT

SOURCES = Sources(ROOT)
DEPS = expected_deps(ROOT)


def _copy(tmp_path: Path) -> Path:
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    for name in ("conf", "src", "stages"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def test_dvc_yaml_lists_the_generated_code_deps():
    assert write_deps(ROOT, check=True) is None


def test_the_check_names_a_missing_and_an_extra_dep(tmp_path):
    repo = _copy(tmp_path)
    text = (repo / "dvc.yaml").read_text()
    # select ranks with the score registry; prepare never runs the report
    assert "        - src/datamap/scoring/registry.py\n" in text
    tampered = text.replace("        - src/datamap/scoring/registry.py\n", "", 1)
    tampered = tampered.replace("      - stages/prepare.py\n",
                                "      - stages/prepare.py\n      - src/datamap/report\n", 1)
    (repo / "dvc.yaml").write_text(tampered)
    message = write_deps(repo, check=True)
    assert message is not None
    assert "select (missing: src/datamap/scoring/registry.py; not run: -)" in message
    assert "prepare (missing: -; not run: src/datamap/report)" in message
    write_deps(repo)
    assert (repo / "dvc.yaml").read_text() == text  # written back exactly


def test_generated_deps_keep_the_data_deps_and_their_comments():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    text = (ROOT / "dvc.yaml").read_text()
    assert text.count(MARKER) == len(stages)
    select = stages["select"]["do"]["deps"]
    assert "data/selections" in select and "data/cartography/scores.parquet" in select
    assert "# files of ids named by `ids_file` specs" in text


def test_the_analysis_sees_lazy_function_level_and_plugin_imports():
    # it must be able to fail: the select stage ranks with the score registry (imported by
    # selection.ranking), the train stage builds DynamicsRecorder through the lazy export of
    # datamap.dynamics named by the dynamics config's _target_, and every logger adapter runs
    # in train (the adapters package loads each of its modules)
    assert "src/datamap/scoring/registry.py" in DEPS["select"]
    recorder = SOURCES.package_constants("datamap.dynamics")["_EXPORTS"]["DynamicsRecorder"]
    assert SOURCES.module_file(recorder).relative_to(ROOT).as_posix() in DEPS["train"]
    assert "src/datamap/tracking" in DEPS["train"] or \
        "src/datamap/tracking/adapters" in DEPS["train"]
    assert not any(d.startswith("src/datamap/report") for d in DEPS["train"])
    # every option of a config group counts: prepare runs the table reader although the
    # default data is the digits
    assert "src/datamap/data/table.py" in DEPS["prepare"]


def test_editing_the_evaluate_stage_does_not_rerun_training():
    assert "src/datamap/evaluation" in DEPS["evaluate"]
    for stage in ("train", "retrain"):
        assert not any(d.startswith("src/datamap/evaluation") for d in DEPS[stage]), stage


def test_top_level_plots_are_not_files_inside_directory_outs():
    # `dvc exp run` resolves every top-level plot before it commits an experiment; a plot inside
    # a directory out makes it load that directory's manifest from the cache, which a fresh
    # clone does not have ("failed to load directory"), even when the experiment never touches
    # that stage.
    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    dir_outs = set()
    for stage in dvc_yaml["stages"].values():
        body = stage.get("do", stage)
        for out in body.get("outs", []):
            path = next(iter(out)) if isinstance(out, dict) else out
            if "." not in Path(path).name:
                dir_outs.add(Path(path))
    for plot in dvc_yaml.get("plots", []):
        path = Path(next(iter(plot)) if isinstance(plot, dict) else plot)
        inside = [str(d) for d in dir_outs if d in path.parents]
        assert not inside, f"top-level plot {path} lies inside the directory out {inside[0]}"

"""Bad input to a stage script: one line naming the key, exit code 2, no artifact written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import ROOT


def run_stage(name: str, *overrides: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", f"stages.{name}", "hydra.run.dir=.", "hydra.output_subdir=null",
         "hydra/job_logging=none", "hydra/hydra_logging=none", *overrides],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("rate", ["1.0", "1.5", "-0.2"])
def test_prepare_refuses_label_noise_outside_unit_interval(tmp_path, rate):
    result = run_stage("prepare", f"data.label_noise={rate}", cwd=tmp_path)
    assert_one_line_error(result, "data.label_noise", "[0, 1)")
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.parquet"))


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ("{ambiguous: 0.7, random: 0.4}", ["selection.specs.bad", "sum to 1.1 > 1"]),
        ("{ambiguous: -0.1}", ["selection.specs.bad.ambiguous", "[0, 1]"]),
        ("{ambigous: 0.3}", ["selection.specs.bad.ambigous", "unknown criterion"]),
    ],
)
def test_select_refuses_bad_specs(tmp_path, spec, fragments):
    result = run_stage("select", f"+selection.specs.bad={spec}", "+spec=bad", cwd=tmp_path)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "data" / "subsets" / "bad").exists()


def test_unknown_spec_name(tmp_path):
    result = run_stage("select", "+spec=nonexistent", cwd=tmp_path)
    assert_one_line_error(result, "spec='nonexistent'", "selection.specs")


def test_missing_input_names_the_file_and_the_fix(tmp_path):
    result = run_stage("cartography", cwd=tmp_path)
    assert_one_line_error(result, "data/prepared/meta.json", "run the stage that produces it")
    assert not (tmp_path / "data" / "cartography").exists()

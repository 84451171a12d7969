"""Bad input to a stage script: one line naming the key, exit code 2, no artifact written."""

from __future__ import annotations

import pytest

from .helpers import assert_one_line_error, run_stage


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

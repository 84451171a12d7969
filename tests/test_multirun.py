"""stages.subset: select -> retrain -> evaluate for one spec as a Hydra app, a multirun over its
fractions on the joblib launcher, and the comparison table written when the multirun ends."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from datamap.errors import DataError
from datamap.pipeline.multirun import job_label, write_comparison

from .helpers import ROOT, assert_one_line_error, run_stage, subprocess_env


def multirun(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m stages.subset -m ...`` in ``cwd``, logging to stdout."""
    return subprocess.run(
        [sys.executable, "-m", "stages.subset", "-m", "hydra/job_logging=stdout",
         "hydra/hydra_logging=none", *overrides],
        cwd=cwd, env=subprocess_env(PYTHONPATH=str(ROOT)), capture_output=True, text=True,
        timeout=900)


def repo_with_scores(tmp_path: Path, digits_prepared: Path, digits_cartography: Path) -> Path:
    """A working directory holding what the subset app reads: prepared data and scores."""
    shutil.copytree(digits_prepared, tmp_path / "data" / "prepared")
    shutil.copytree(digits_cartography, tmp_path / "data" / "cartography")
    return tmp_path


@pytest.mark.slow
def test_multirun_over_two_fractions_on_joblib(tmp_path, digits_prepared, digits_cartography):
    cwd = repo_with_scores(tmp_path, digits_prepared, digits_cartography)
    sweep = tmp_path / "sweep"
    result = multirun("hydra/launcher=parallel", "+spec=ambiguous_33",
                       "selection.specs.ambiguous_33.ambiguous=0.1,0.25",
                       "selection.retrain_seeds=[0,1]", "trainer.max_epochs=2",
                       "trainer.accelerator=cpu", f"hydra.sweep.dir={sweep}", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    n_train = len(pd.read_parquet(digits_prepared / "train.parquet"))
    comparison = json.loads((sweep / "comparison.json").read_text())
    labels = ["selection.specs.ambiguous_33.ambiguous=0.1",
              "selection.specs.ambiguous_33.ambiguous=0.25"]
    assert list(comparison) == labels
    for label, fraction, job in zip(labels, (0.1, 0.25), ("0", "1"), strict=True):
        row = comparison[label]
        assert row["job"] == job and row["n_train"] == round(fraction * n_train)
        described = json.loads((sweep / job / "job.json").read_text())
        assert described["launcher"].endswith("JoblibLauncher")
        assert row["seeds"] == 2 and 0 < row["test"]["accuracy"]["mean"] <= 1
        # each job wrote under its own directory, both seeds' models included
        retrained = sweep / job / "data" / "retrain" / "ambiguous_33"
        assert (retrained / "seed_1" / "model.ckpt").is_file()
    table = (sweep / "comparison.md").read_text()
    assert all(f"| `{label}` | {comparison[label]['n_train']} |" in table for label in labels)
    # the repository's data/ was only read
    assert sorted(p.name for p in (cwd / "data").iterdir()) == ["cartography", "prepared"]


@pytest.mark.slow
def test_subset_needs_a_spec(tmp_path, digits_prepared, digits_cartography):
    cwd = repo_with_scores(tmp_path, digits_prepared, digits_cartography)
    result = run_stage("subset", "trainer.max_epochs=1", cwd=cwd)
    assert_one_line_error(result, "runs one selection spec per job: add +spec=NAME")


def test_job_label_names_what_the_job_varied():
    assert job_label({"spec": "hard_33", "overrides": ["+spec=hard_33", "seed=3"]}) == "seed=3"
    assert job_label({"spec": "hard_33", "overrides": ["+spec=hard_33"]}) == "hard_33"
    # what every job of the multirun shares is left out
    job = {"spec": "hard_33", "overrides": ["+spec=hard_33", "seed=3", "trainer.max_epochs=2"]}
    assert job_label(job, frozenset({"trainer.max_epochs=2"})) == "seed=3"


def test_comparison_of_no_finished_job_is_refused(tmp_path):
    (tmp_path / "0").mkdir()
    with pytest.raises(DataError, match="no finished job"):
        write_comparison(tmp_path)

"""A fresh clone: the committed dvc.lock names outputs no local cache holds; the README's
experiment commands must still work (before or without `make run`)."""

from __future__ import annotations

import json

import pytest

from .helpers import copy_repo, sh, stages_run

pytestmark = pytest.mark.slow


def test_single_stage_experiment_on_a_fresh_clone(tmp_path):
    # a clone has the committed dvc.lock but none of the cached outputs it names: an experiment
    # on one stage must still run (DVC used to fail committing it: "failed to load directory")
    fresh = copy_repo(tmp_path / "clone")
    assert (fresh / "dvc.lock").is_file() and not (fresh / "data" / "prepared").exists()
    result = sh("dvc", "exp", "run", "-S", "trainer.max_epochs=2", "train", cwd=fresh)
    assert stages_run(result.stdout) == {"prepare", "train"}, result.stdout
    metrics = json.loads((fresh / "data" / "train" / "metrics.json").read_text())
    assert metrics["epochs_trained"] == 2
    assert "trainer.max_epochs" in sh("dvc", "exp", "show", "--md", cwd=fresh).stdout

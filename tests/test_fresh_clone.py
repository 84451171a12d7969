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


def test_dvc_exp_run_never_silently_drops_the_overrides_of_compose(tmp_path):
    # `dvc exp run -S` recomposes params.yaml from conf/ alone: the overrides given to
    # `datamap compose` would be gone and the run another one. The stages refuse it in one
    # line; saved as an experiment (`--save`), the overrides are kept
    repo = copy_repo(tmp_path / "repo", "data.label_noise=0.25", "trainer.max_epochs=2")
    refused = sh("dvc", "exp", "run", "-S", "seed=7", "prepare", cwd=repo, check=False)
    assert refused.returncode != 0
    assert ("error: params.yaml was recomposed from conf/ by `dvc exp run`, which drops the "
            "overrides given to `datamap compose` (data.label_noise=0.25 trainer.max_epochs=2)"
            in refused.stdout + refused.stderr)
    assert not (repo / "data" / "prepared").exists()

    saved = sh("datamap", "compose", "--save", "noisy", "data.label_noise=0.25",
               "trainer.max_epochs=2", cwd=repo)
    assert "dvc exp run -S experiment=noisy" in saved.stdout
    assert "label_noise: 0.25" in (repo / "conf" / "experiment" / "noisy.yaml").read_text()
    sh("dvc", "exp", "run", "-S", "experiment=noisy", "-S", "seed=7", "prepare", cwd=repo)
    meta = json.loads((repo / "data" / "prepared" / "meta.json").read_text())
    assert meta["label_noise"] == 0.25

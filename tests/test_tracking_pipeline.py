"""Tracking inside the DVC pipeline, for real in a temporary copy of the repo: DVCLive logs into
the train stage's outs without a dvc.yaml or an experiment of its own, progress is one plain
line per epoch, and the training curves are DVC plots that `dvc plots diff` compares across
experiments."""

from __future__ import annotations

import json
import re

import pytest

from .helpers import copy_repo, sh, stages_run

pytestmark = pytest.mark.slow

CONFIG = ["trainer.max_epochs=2", "logger=dvclive"]


def test_dvclive_and_curves_in_the_pipeline(tmp_path):
    repo = copy_repo(tmp_path / "repo", *CONFIG)
    result = sh("dvc", "repro", "cartography", cwd=repo)
    assert {"prepare", "train", "cartography"} <= stages_run(result.stdout)
    # under DVC: plain lines, no progress bar redrawing itself with carriage returns
    output = result.stdout + result.stderr
    assert "\r" not in output
    assert re.search(r"epoch 1/2: .*val/macro_f1 [0-9.]+", output), output[-3000:]
    assert re.search(r"epoch 2/2: ", output)

    live = repo / "data" / "train" / "logs" / "dvclive"
    assert (live / "plots" / "metrics" / "val" / "macro_f1.tsv").is_file()
    assert (live / "plots" / "images" / "val" / "confusion_matrix" / "epoch_001.png").is_file()
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("dvc.yaml")) == ["dvc.yaml"]
    assert "up to date" in sh("dvc", "status", "cartography", cwd=repo).stdout
    # nothing of the run's staging directory was added to git (DVC stages its own .gitignores)
    staged = sh("git", "status", "--porcelain", cwd=repo).stdout.splitlines()
    assert not [line for line in staged if ".staging-" in line or (
        line.startswith("A ") and not line.endswith((".gitignore", "dvc.lock")))], staged
    assert json.loads((repo / "data" / "train" / "logs" / "runs.json").read_text()) == {}

    shown = json.loads(sh("dvc", "plots", "show", "--json", cwd=repo).stdout)["data"]
    curves = shown["data/curves/train.csv"][0]["content"]["data"]["values"]
    assert {row["field"] for row in curves} == {"train_loss", "val_loss", "train_acc", "val_acc"}
    assert sorted({row["epoch"] for row in curves}) == ["0", "1"]

    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-q", "-m", "reproduce", cwd=repo)
    # an experiment of the train stage: DVCLive adds none of its own
    sh("dvc", "exp", "run", "train", "-n", "three", *(f"-S{o}" for o in CONFIG[1:]),
       "-S", "trainer.max_epochs=3", cwd=repo)
    experiments = sh("dvc", "exp", "list", "--name-only", cwd=repo).stdout.split()
    assert experiments == ["three"]
    diff = json.loads(sh("dvc", "plots", "diff", "HEAD", "three", "--json", "--targets",
                         "data/curves/train.csv", cwd=repo).stdout)["data"]
    (plot,) = diff["data/curves/train.csv"]
    assert sorted(plot["revisions"]) == ["HEAD", "three"]
    epochs = {(row["rev"], row["epoch"]) for row in plot["content"]["data"]["values"]}
    assert ("three", "2") in epochs and ("HEAD", "2") not in epochs

"""End to end: `dvc repro` for real in a temporary copy of the repo, on a tiny config.

One pipeline run is shared by the tests of this module. It is committed and tagged ``base``;
before each test the workspace is reset to that tag (git and DVC's outputs), so every test
starts from the same reproduced pipeline whatever ran before it.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .helpers import compose_params, copy_repo, digest, sh, stages_run

pytestmark = pytest.mark.slow

#: Overrides that make the demo fast enough for CI; every later composition repeats them so
#: only the intended change differs.
TINY = ["trainer.max_epochs=5", "data.controls.mnist.limit=1000", "selection=quick",
        "selection.sweep.regions=[ambiguous]", "selection.sweep.fractions=[0.25]",
        "selection.retrain_seeds=[0,1]"]
SPECS = ["full", "ambiguous_33", "hard_33", "ambiguous_25"]
SEEDS = [0, 1]


def compose(repo: Path, *overrides: str) -> None:
    compose_params(repo, *TINY, *overrides)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    """A fresh clone-like copy of the project with the pipeline reproduced once, tagged base."""
    repo = copy_repo(tmp_path_factory.mktemp("pipeline") / "repo", *TINY)
    result = sh("dvc", "repro", cwd=repo)
    ran = stages_run(result.stdout)
    assert {"prepare", "train", "cartography", "report"} <= ran, result.stdout[-3000:]
    assert {f"retrain@{s}" for s in SPECS} <= ran
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-q", "-m", "reproduce", cwd=repo)
    sh("git", "tag", "base", cwd=repo)
    return repo


@pytest.fixture
def repo(pipeline) -> Path:
    """The reproduced pipeline, reset to its ``base`` commit and outputs."""
    sh("git", "reset", "-q", "--hard", "base", cwd=pipeline)
    sh("git", "clean", "-qfd", "-e", "data/", cwd=pipeline)
    sh("dvc", "checkout", "--force", cwd=pipeline)
    assert json.loads(sh("dvc", "status", "--json", cwd=pipeline).stdout) == {}
    return pipeline


def test_outputs_exist_and_make_sense(repo):
    data = repo / "data"
    scores = pd.read_parquet(data / "cartography" / "scores.parquet")
    train = pd.read_parquet(data / "prepared" / "train.parquet")
    assert len(scores) == len(train) and scores["id"].is_unique
    assert (data / "cartography" / "data_map.png").read_bytes()[:4] == b"\x89PNG"
    assert (data / "cartography" / "data_map.html").read_text().startswith("<!DOCTYPE html>")
    assert (data / "cartography" / "review" / "hard_to_learn.csv").is_file()
    summary = json.loads((data / "cartography" / "summary.json").read_text())
    assert sum(summary["regions"].values()) == len(train)
    # injected label errors are what cartography should find
    assert summary["noise"]["hard_to_learn_share"] > 0.5
    report = json.loads((data / "report" / "metrics.json").read_text())
    assert sorted(report) == sorted(SPECS)
    for spec in SPECS:
        assert set(report[spec]) >= {"n_train", "test", "control"}
        assert 0 < report[spec]["test"]["accuracy"]["mean"] <= 1
        assert report[spec]["seeds"] == len(SEEDS)
    assert report["full"]["n_train"] == len(train)
    assert report["hard_33"]["n_train"] == round(0.33 * len(train))
    # hard-to-learn holds the flipped labels; the full set does not concentrate them
    assert report["hard_33"]["flipped_share"] > 2 * report["full"]["flipped_share"]
    summary_md = (data / "report" / "summary.md").read_text()
    assert "| `ambiguous_25` |" in summary_md
    # the regions are the run's quantiles, stated where they are used, and the ambiguous third
    # the selection picks is the ambiguous region the report shows
    rule = summary["regions_rule"]
    assert rule["rule"] == "quantile" and f"Regions: {rule['statement']}" in summary_md
    assert report["ambiguous_33"]["regions"]["ambiguous"] == 1.0
    # the sweep's specs are on one curve per criterion
    curves = pd.read_csv(data / "report" / "fraction_curves.csv")
    assert set(curves["criterion"]) == {"ambiguous"}
    assert sorted(set(curves["fraction"])) == [0.25, 0.33]
    assert (data / "report" / "fraction_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_second_repro_runs_nothing(repo):
    result = sh("dvc", "repro", cwd=repo)
    assert stages_run(result.stdout) == set(), result.stdout


def test_metrics_show_lists_the_report(repo):
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=repo).stdout)
    files = next(iter(shown.values()))["data"]
    metrics = files["data/report/metrics.json"]["data"]
    assert metrics["ambiguous_33"]["control"]["mnist"]["accuracy"]["mean"] > 0
    assert "data/cartography/summary.json" in files


def test_hydra_multirun_writes_each_job_under_its_own_dir(repo, tmp_path):
    sweep = tmp_path / "sweep"
    sh(sys.executable, "-m", "stages.select", "-m", "+spec=hard_33,ambiguous_33",
       f"hydra.sweep.dir={sweep}", cwd=repo)
    hard = pd.read_parquet(sweep / "0" / "data" / "subsets" / "hard_33" / "ids.parquet")
    ambiguous = pd.read_parquet(sweep / "1" / "data" / "subsets" / "ambiguous_33" / "ids.parquet")
    # each job selected what the pipeline's own select stage did
    subsets = repo / "data" / "subsets"
    assert hard.equals(pd.read_parquet(subsets / "hard_33" / "ids.parquet"))
    assert ambiguous.equals(pd.read_parquet(subsets / "ambiguous_33" / "ids.parquet"))
    # the DVC-tracked artifacts were only read
    assert json.loads(sh("dvc", "status", "--json", cwd=repo).stdout) == {}


def test_forced_rerun_is_byte_identical(repo):
    data = repo / "data"
    watched = [data / "cartography" / "scores.parquet", data / "train" / "dynamics.parquet",
               data / "subsets" / "hard_33" / "ids.parquet", data / "train" / "model.ckpt",
               data / "cartography" / "data_map.html"]
    before = {p: digest(p) for p in watched}
    result = sh("dvc", "repro", "-f", "select@hard_33", cwd=repo)
    assert {"prepare", "train", "cartography", "select@hard_33"} <= stages_run(result.stdout)
    assert {p: digest(p) for p in watched} == before
    # identical outputs upstream -> DVC sees every downstream stage as up to date
    status = sh("dvc", "status", "--json", cwd=repo).stdout
    assert json.loads(status) == {}, status


def test_queued_experiments_over_a_fraction_reuse_train(repo):
    # the queue recipe of docs/selection.md: two experiments that differ only in one fraction;
    # each reruns only that spec's stages and the report (prepare, train, cartography come from
    # the cache)
    for fraction in ("0.1", "0.2"):
        sh("dvc", "exp", "run", "--queue", "-n", f"amb{fraction[-1]}", *[f"-S={o}" for o in TINY],
           "-S", f"selection.specs.ambiguous_33.ambiguous={fraction}", cwd=repo)
    sh("dvc", "queue", "start", "-j", "2", cwd=repo)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = sh("dvc", "queue", "status", cwd=repo).stdout
        if "Success" in status and not re.search(r"Queued|Running", status):
            break
        time.sleep(3)
    assert status.count("Success") == 2, status
    for name in ("amb1", "amb2"):
        logs = sh("dvc", "queue", "logs", name, cwd=repo).stdout
        assert stages_run(logs) == {"select@ambiguous_33", "retrain@ambiguous_33", "evaluate",
                                    "report"}, logs[-3000:]
    shown = sh("dvc", "exp", "show", "--md", cwd=repo).stdout
    assert "amb1" in shown and "amb2" in shown, shown
    diff = json.loads(sh("dvc", "metrics", "diff", "amb1", "amb2", "--json", cwd=repo).stdout)
    changed = diff["data/report/metrics.json"]
    assert "ambiguous_33.n_train" in changed and "ambiguous_33.test.accuracy.mean" in changed
    assert not any(key.startswith("full.") for key in changed)


def test_changing_the_control_set_invalidates_only_evaluation(repo):
    # prepare reruns; the training data's bytes do not change, so DVC sees no model to retrain,
    # only the evaluations and the report (which read the control sets)
    compose(repo, "data.controls.mnist.limit=600")
    assert stages_run(sh("dvc", "repro", "prepare", cwd=repo).stdout) == {"prepare"}
    status = json.loads(sh("dvc", "status", "--json", cwd=repo).stdout)
    assert set(status) == {"evaluate", "report"}, status


def test_every_file_a_stage_writes_is_declared(repo):
    # an undeclared file is neither cached nor restored by DVC, and silently goes stale
    declared = set()
    with_lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for stage in with_lock.values():
        declared.update(Path(out["path"]) for out in stage.get("outs", []))
    git_tracked = set(sh("git", "ls-files", "data", cwd=repo).stdout.split())
    undeclared = [
        str(rel) for path in (repo / "data").rglob("*") if path.is_file()
        for rel in [path.relative_to(repo)]
        if str(rel) not in git_tracked and not any(d == rel or d in rel.parents for d in declared)
    ]
    assert not undeclared, f"files written outside any declared out: {undeclared[:10]}"


def test_metrics_describe_the_checkpoint_beside_them(repo):
    from datamap.models.checkpoint import checkpoint_epoch, load_model
    from datamap.training.metrics import split_metrics

    prepared = repo / "data" / "prepared"
    retrained = [repo / "data" / "retrain" / s / f"seed_{seed}" for s in SPECS for seed in SEEDS]
    for out in [repo / "data" / "train", *retrained]:
        metrics = json.loads((out / "metrics.json").read_text())
        fresh = split_metrics(load_model(out / "model.ckpt"), prepared, "val")
        assert metrics["val"] == fresh, out
        epoch = checkpoint_epoch(out / "model.ckpt")
        assert metrics["checkpoint"]["epoch"] == epoch
        # the checkpoint is the (first) epoch of best validation macro-F1, as logged in training
        logged = pd.read_csv(out / "logs" / "csv" / "metrics.csv").dropna(subset=["val/macro_f1"])
        assert epoch == int(logged.loc[logged["val/macro_f1"].idxmax(), "epoch"]), out
        assert metrics["last_epoch"]["epoch"] == int(logged["epoch"].max())


def test_evaluate_command_reproduces_the_evaluate_stage(repo, tmp_path):
    # the reload-and-evaluate command of docs/tracking.md against the stage's metrics.json
    out = tmp_path / "evaluated.json"
    printed = sh("datamap", "evaluate", "data/retrain/full/seed_0/model.ckpt", "--data", "test",
                 "--json", str(out), cwd=repo).stdout
    stage = json.loads((repo / "data" / "eval" / "metrics.json").read_text())
    expected = stage["full"]["per_seed"]["seed_0"]["test"]
    assert json.loads(out.read_text())["test"] == expected
    assert f"{expected['accuracy']:.4f}" in printed

"""End to end: reviewers' decisions flow back into the data through `dvc repro`.

A temporary copy of the repository reproduces the pipeline on a tiny config, then writes
``data/corrections.csv`` for the injected label flips the review queue found (a reviewer who
restores the true label) and reproduces again: prepare and everything after it reruns, the
training split has that many fewer flipped labels, and ``dvc metrics diff`` against the commit
before the corrections shows it. A decision on a test example alone then reruns prepare and
the stages that read the test split or the decisions, never training.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from datamap.data.corrections import Decision, format_corrections

from .helpers import copy_repo, sh, stages_run

pytestmark = pytest.mark.slow

TINY = ["trainer.max_epochs=5", "data.controls.mnist.limit=1000", "selection=quick"]


def test_corrections_rerun_prepare_and_what_follows_and_show_in_the_metrics(tmp_path):
    repo = copy_repo(tmp_path / "repo", *TINY)
    stages = set(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])
    first = stages_run(sh("dvc", "repro", cwd=repo).stdout)
    assert {"prepare", "train", "cartography", "evaluate", "report"} <= first
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-q", "-m", "reproduce", cwd=repo)
    sh("git", "tag", "before", cwd=repo)

    data = repo / "data"
    meta = json.loads((data / "prepared" / "meta.json").read_text())
    names = meta["class_names"]
    train = pd.read_parquet(data / "prepared" / "train.parquet",
                            columns=["id", "label", "clean_label"])
    flips_before = int((train["label"] != train["clean_label"]).sum())
    queue = pd.read_csv(data / "cartography" / "review" / "hard_to_learn.csv", dtype=str,
                        keep_default_na=False)
    queued = train.set_index("id").loc[queue["id"].astype(int)]
    found = queued[queued["label"] != queued["clean_label"]]
    assert len(found) >= 10, "the review queue should hold injected flips"
    # the simulated reviewer: restore the true label of the flips found, drop one of them
    decisions = [Decision(int(i), "relabel", names[int(row.clean_label)], "restored", "e2e")
                 for i, row in found.iloc[1:].iterrows()]
    decisions.append(Decision(int(found.index[0]), "drop", note="unreadable"))
    (data / "corrections.csv").write_text(format_corrections(decisions))
    sh("git", "add", "data/corrections.csv", cwd=repo)
    sh("git", "commit", "-q", "-m", "corrections", cwd=repo)

    second = stages_run(sh("dvc", "repro", cwd=repo).stdout)
    # the training data changed: prepare and every stage after it reruns
    assert {"prepare", "train", "cartography", "evaluate", "report"} <= second
    assert {name.split("@")[0] for name in second} <= stages
    meta = json.loads((data / "prepared" / "meta.json").read_text())
    relabelled = len(decisions) - 1
    assert meta["corrections"]["train"] == {"relabel": relabelled, "drop": 1, "keep": 0}
    after = pd.read_parquet(data / "prepared" / "train.parquet",
                            columns=["id", "label", "clean_label"])
    assert len(after) == len(train) - 1
    assert int((after["label"] != after["clean_label"]).sum()) == \
        flips_before - relabelled - 1
    summary = json.loads((data / "cartography" / "summary.json").read_text())
    assert summary["corrections"]["train"] == {"reviewed": len(decisions),
                                               "relabelled": relabelled, "dropped": 1,
                                               "kept": 0}
    assert summary["noise"]["n_flipped"] == flips_before - relabelled - 1
    queue = pd.read_csv(data / "cartography" / "review" / "hard_to_learn.csv")
    assert not set(queue["id"]) & {d.id for d in decisions}  # decided: out of the queue

    diff = json.loads(sh("dvc", "metrics", "diff", "before", "--json", cwd=repo).stdout)
    cartography = diff["data/cartography/summary.json"]
    assert cartography["corrections.train.relabelled"] == {"old": 0, "new": relabelled,
                                                           "diff": relabelled}
    assert cartography["noise.n_flipped"]["diff"] == -relabelled - 1
    report = diff["data/report/metrics.json"]
    assert report["full.n_train"]["diff"] == -1
    assert report["full.flipped_share"]["new"] < report["full.flipped_share"]["old"]
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-q", "-m", "reproduce with corrections", cwd=repo)

    # a decision on a test example: training data and meta.json keep their bytes, so only
    # prepare, the stages that read the decisions or the test split, and the report rerun
    test = pd.read_parquet(data / "prepared" / "test.parquet", columns=["id"])
    more = [*decisions, Decision(int(test["id"].iloc[0]), "drop", note="not a digit")]
    (data / "corrections.csv").write_text(format_corrections(more))
    third = stages_run(sh("dvc", "repro", cwd=repo).stdout)
    assert third == {"prepare", "cartography", "evaluate", "report"}, third
    assert json.loads(sh("dvc", "status", "--json", cwd=repo).stdout) == {}

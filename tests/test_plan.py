"""The retraining grid's plan: fits, their cost against the train stage, the time estimate."""

from __future__ import annotations

import json

import pytest

from datamap.cli import main
from datamap.selection.plan import grid_plan, read_timings, record_wall_time

from .helpers import ROOT


def test_the_default_grid_counts_every_spec_and_seed_and_its_cost():
    from omegaconf import OmegaConf

    from datamap.selection.plan import plan_from_config

    cfg = OmegaConf.load(ROOT / "params.yaml")
    plan = plan_from_config(cfg, 10_000, root=ROOT / "nowhere")
    specs = len(cfg.selection.all_specs)
    assert plan.fits == specs * len(cfg.selection.retrain_seeds)
    by_name = {s.name: s.examples for s in plan.specs}
    assert by_name["full"] == 10_000 and by_name["hard_33"] == 3_300
    assert by_name["mixed"] == 2_500 + 800
    # the grid's example-epochs against one train-stage fit over all 10,000 examples
    total = sum(by_name.values()) * len(cfg.selection.retrain_seeds)
    assert plan.relative_cost == pytest.approx(total / 10_000)
    assert plan.estimated_seconds is None
    line = plan.summary()
    assert f"{plan.fits} fits ({specs} specs x 3 seed(s)" in line
    assert "selection=quick" in line  # a grid this large says how to make it small


def test_the_estimate_uses_this_machines_train_pace_only_for_the_same_run(tmp_path):
    record_wall_time("train", 120.0, examples=1000, epochs=10, root=tmp_path)
    assert read_timings(tmp_path)["train"] == {"seconds": 120.0, "examples": 1000, "epochs": 10}
    specs = {"full": {"random": 1.0}, "half": {"ambiguous": 0.5}}
    plan = grid_plan(specs, 1000, seeds=[0, 1], epochs=10, timings=read_timings(tmp_path))
    assert plan.fits == 4 and plan.relative_cost == pytest.approx(3.0)
    assert plan.estimated_seconds == pytest.approx(360.0)
    assert "about 6 min at this machine's pace" in plan.summary()
    assert "selection=quick" not in plan.summary()
    # another data size or another number of epochs: the pace does not carry over
    assert grid_plan(specs, 2000, [0], 10, timings=read_timings(tmp_path)).train_seconds is None
    assert grid_plan(specs, 1000, [0], 5, timings=read_timings(tmp_path)).train_seconds is None


def test_datamap_plan_prints_the_table_and_refuses_without_a_size(tmp_path, capsys, monkeypatch):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    assert main(["plan"]) == 2
    assert "--examples N" in capsys.readouterr().err
    (tmp_path / "data" / "prepared").mkdir(parents=True)
    (tmp_path / "data" / "prepared" / "meta.json").write_text(
        json.dumps({"sizes": {"train": 600, "val": 100}}))
    assert main(["plan"]) == 0
    out = capsys.readouterr().out
    assert "| `hard_33` | 198 | 3 |" in out and "retraining grid:" in out
    assert main(["plan", "--params", "missing.yaml"]) == 2
    assert "datamap compose" in capsys.readouterr().err

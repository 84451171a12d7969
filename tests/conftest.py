"""Shared fixtures: the real config composed and shrunk, and small prepared datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import datamap  # noqa: F401  -- pins the CPU numerics (datamap.CPU_PINS) before torch loads

# helpers imports neither torch nor Lightning, so the environment below still comes first
from .helpers import ROOT, compose_cfg

# Before torch is imported anywhere: 2-core CI machines thrash with more threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
for var, value in {
    "GIT_AUTHOR_NAME": "datamap tests", "GIT_AUTHOR_EMAIL": "tests@datamap.invalid",
    "GIT_COMMITTER_NAME": "datamap tests", "GIT_COMMITTER_EMAIL": "tests@datamap.invalid",
}.items():
    os.environ.setdefault(var, value)

@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture
def tiny_cfg():
    return compose_cfg()


@pytest.fixture(scope="session")
def digits_prepared(tmp_path_factory) -> Path:
    """The built-in digits, prepared once per session with the default data config."""
    from datamap.data.prepare import prepare_from_config

    cfg = compose_cfg()
    out = tmp_path_factory.mktemp("prepared") / "prepared"
    prepare_from_config(cfg.data, out, seed=cfg.seed)
    return out


@pytest.fixture(scope="session")
def digits_cartography(tmp_path_factory, digits_prepared) -> Path:
    """The cartography stage's outputs (data_map.html among them) on the prepared digits, from
    random-logit dynamics recorded on its training split (no training)."""
    import pyarrow.parquet as pq

    from datamap.cartography.run import run_cartography
    from datamap.dynamics.schema import DynamicsMeta, build_dynamics
    from datamap.dynamics.storage import write_dynamics

    from .helpers import make_columns

    train = pq.read_table(digits_prepared / "train.parquet", columns=["id", "label"])
    cols, _, _ = make_columns(n=train.num_rows, epochs=5, k=10, seed=3,
                              ids=train.column("id").to_numpy(),
                              gold=train.column("label").to_numpy())
    work = tmp_path_factory.mktemp("cartography")
    write_dynamics(work / "dynamics.parquet", build_dynamics(cols, DynamicsMeta(num_classes=10)))
    cfg = compose_cfg()
    run_cartography(work / "dynamics.parquet", digits_prepared, work / "out", cfg.cartography,
                    seed=cfg.seed)
    return work / "out"

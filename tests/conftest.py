"""Shared fixtures: the real config composed and shrunk, and small prepared datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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

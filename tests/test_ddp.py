"""DDP: two CPU processes (gloo) record their shares; rank 0 gathers, dedupes and writes.

The train stage runs as a subprocess (`python -m stages.train trainer=ddp`): Lightning's DDP
launcher re-runs the command line as rank 1, which inside pytest would re-run pytest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from datamap.dynamics import read_dynamics
from datamap.training.fit import fit_classifier

from .helpers import compose_cfg

SMALL = ["trainer.max_epochs=2", "model.net.hidden=[32]", "data.datamodule.batch_size=64",
         "dynamics.splits=[train,val,test]", "dynamics.store_logits=true",
         "dynamics.logits_dtype=float16"]


def ids_by_record(path):
    frame = read_dynamics(path).to_pandas()
    return {key: group.id.to_numpy() for key, group in frame.groupby(["epoch", "record"])}


@pytest.mark.slow
def test_ddp_records_every_id_exactly_once(digits_prepared, tmp_path, root):
    work = tmp_path / "repo"
    shutil.copytree(digits_prepared, work / "data" / "prepared")
    cmd = [sys.executable, "-m", "stages.train", "trainer=ddp", "trainer.accelerator=cpu", *SMALL,
           "hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=stdout",
           "hydra/hydra_logging=none"]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "Starting with 2 processes" in proc.stdout + proc.stderr  # really distributed
    out = work / "data" / "train"
    assert json.loads((out / "checkpoints" / "run.json").read_text())["finished"] is True

    # the single-process run of the same configuration
    single = tmp_path / "single"
    fit_classifier(compose_cfg(*SMALL), prepared_dir=digits_prepared, out_dir=single,
                   record_dynamics=True)

    for name, split in [("dynamics", "train"), ("heldout/dynamics_val", "val"),
                        ("heldout/dynamics_test", "test")]:
        expected = np.sort(pq.read_table(digits_prepared / f"{split}.parquet").column("id")
                           .to_numpy())
        # 1167 training examples: DistributedSampler pads rank 1 with a repeat, which is dropped
        ddp = ids_by_record(out / f"{name}.parquet")
        one = ids_by_record(single / f"{name}.parquet")
        assert sorted(ddp) == sorted(one) == [(0, 0), (1, 0)], name
        for key, ids in ddp.items():
            assert np.array_equal(ids, expected), (name, key)  # each id exactly once
            assert np.array_equal(ids, one[key]), (name, key)
        table = pq.read_table(out / f"{name}.parquet")
        assert table.schema.field("logits").type.value_type == "halffloat"

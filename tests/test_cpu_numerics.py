"""CPU results independent of the instruction set and the thread count (datamap.CPU_PINS).

Unpinned, PyTorch picks the CPU's widest kernels (AVX-512 here, AVX2 elsewhere) and a train run
with two threads differs from one with one thread in the last digits; pinned, they agree.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from datamap import CPU_PINS

from .helpers import ROOT, copy_repo, subprocess_env

STAGE = ["hydra.run.dir=.", "hydra.output_subdir=null", "experiment=tiny",
         "data.controls.mnist.limit=50"]


def _env(**extra: str) -> dict[str, str]:
    env = subprocess_env(PYTHONPATH=str(ROOT))
    for name in CPU_PINS:  # what a fresh shell has: the pins come from datamap itself
        env.pop(name, None)
    return {**env, **extra}


def test_importing_datamap_pins_the_numerics_unless_told_otherwise():
    code = "import os, datamap; print([os.environ.get(k) for k in datamap.CPU_PINS])"
    pinned = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True,
                            text=True, check=True).stdout.strip()
    assert pinned == repr(list(CPU_PINS.values()))
    native = subprocess.run([sys.executable, "-c", code], env=_env(DATAMAP_NATIVE_CPU="1"),
                            capture_output=True, text=True, check=True).stdout.strip()
    assert native == repr([None] * len(CPU_PINS))
    # a user's own choice stands
    own = subprocess.run([sys.executable, "-c", code], env=_env(MKL_CBWR="COMPATIBLE"),
                         capture_output=True, text=True, check=True).stdout.strip()
    assert "'COMPATIBLE'" in own


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_train_outputs_do_not_depend_on_threads_or_the_cpus_instruction_sets(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    subprocess.run([sys.executable, "-m", "stages.prepare", *STAGE], cwd=repo, env=_env(),
                   check=True, capture_output=True)
    outputs = {}
    # one thread and MKL free to use AVX-512 vs two threads and an MKL limited to AVX2, as on a
    # CPU without AVX-512: the pinned stage computes the same bits
    for name, extra in {"one": {"OMP_NUM_THREADS": "1", "MKL_ENABLE_INSTRUCTIONS": "AVX512"},
                        "two": {"OMP_NUM_THREADS": "2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}.items():
        result = subprocess.run([sys.executable, "-m", "stages.train", *STAGE], cwd=repo,
                                env=_env(**extra), capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        outputs[name] = {f: _digest(repo / "data" / "train" / f)
                         for f in ("dynamics.parquet", "model.ckpt", "metrics.json")}
    assert outputs["one"] == outputs["two"]

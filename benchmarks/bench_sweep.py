"""Benchmark a selection grid on the built-in data: 4 regions x 4 fractions x 3 seeds (48
retrainings, one evaluation per seed) with ``dvc repro``.

A copy of the repository (git-committed, as a fresh clone) is reproduced up to the cartography
stage first (not timed: that is the part a selection sweep reuses from DVC's cache); then the
timed ``dvc repro`` runs every ``select``, ``retrain`` and ``evaluate`` stage of the grid and the
hand-written specs, and the report. The result goes to ``benchmarks/results/sweep.md`` with the
report's table.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_sweep.py [--workdir /tmp/datamap-bench-sweep]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "sweep.md"
GRID = ["selection.sweep.regions=[ambiguous,hard_to_learn,easy_to_learn,random]",
        "selection.sweep.fractions=[0.1,0.25,0.33,0.5]", "selection.retrain_seeds=[0,1,2]"]
IGNORED = shutil.ignore_patterns(".venv", ".git", "data", "outputs", "multirun", "__pycache__",
                                 ".pytest_cache", ".ruff_cache", "*.egg-info", ".dvc/cache",
                                 ".dvc/tmp")


def sh(*args: str, cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/datamap-bench-sweep"))
    args = parser.parse_args()

    shutil.rmtree(args.workdir, ignore_errors=True)
    repo = args.workdir / "repo"
    shutil.copytree(ROOT, repo, ignore=IGNORED)
    shutil.copytree(ROOT / "data" / "selections", repo / "data" / "selections")
    env_bin = str(Path(sys.executable).parent)
    os.environ["PATH"] = env_bin + os.pathsep + os.environ["PATH"]
    sh(sys.executable, "-m", "datamap.cli", "compose", *GRID, cwd=repo)
    sh("git", "init", "-q", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm",
       "bench", cwd=repo)
    sh("dvc", "repro", "cartography", cwd=repo)

    start = time.perf_counter()
    output = sh("dvc", "repro", cwd=repo)
    seconds = time.perf_counter() - start
    stages = re.findall(r"Running stage '([^']+)'", output)
    retrains = sum(s.startswith("retrain@") for s in stages)
    table = (repo / "data" / "report" / "summary.md").read_text()

    lines = [
        "# Selection sweep: 4 regions x 4 fractions x 3 seeds",
        "",
        f"`python benchmarks/bench_sweep.py` on {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), Python {platform.python_version()}, "
        f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}.",
        "",
        f"- `dvc repro` after cartography: **{seconds:.0f} s** ({seconds / 60:.1f} min) for "
        f"{len(stages)} stages: {retrains} `retrain` stages (3 seeds each, "
        f"{3 * retrains} fits), as many `select` and `evaluate` stages, and the report.",
        "",
        "The report of that run:",
        "",
        table,
    ]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Benchmark a selection grid on the built-in data: 4 regions x 4 fractions x 3 seeds (48
retrainings) two ways: ``dvc repro`` and a Hydra multirun of ``stages.subset`` on the joblib
launcher.

A copy of the repository (git-committed, as a fresh clone) is reproduced up to the cartography
stage first (not timed: that is the part a selection sweep reuses from DVC's cache); then the
timed ``dvc repro`` runs every ``select`` and ``retrain`` stage of the grid and the hand-written
specs, the one ``evaluate`` stage and the report, each stage a process of its own. Then the
timed multirun runs the 16 grid specs from the same cartography scores
(``hydra/launcher=parallel``, two jobs at a time) and the benchmark checks that its comparison
table has the report's numbers. The result goes to ``benchmarks/results/sweep.md`` with the
report's table.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_sweep.py [--workdir DIR]
        (default: a new private temporary directory; a DIR of yours must be empty or new)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
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
sys.path[:0] = [str(ROOT)]  # tests.helpers: the clone-like copy of the repository

from workdir import private_workdir  # noqa: E402

from tests.helpers import copy_repo  # noqa: E402


def sh(*args: str, cwd: Path, **env: str) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, **env})
    if result.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


def compare(report: dict, comparison: dict, specs: list[str]) -> str:
    """Whether the multirun's accuracy and macro-F1 means equal the report's, spec by spec."""
    differ = []
    for spec in specs:
        for where in ("test", *(f"control.{name}" for name in report[spec]["control"])):
            ours, theirs = report[spec], comparison[spec]
            for key in where.split("."):
                ours, theirs = ours[key], theirs[key]
            differ += [f"{spec} {where} {metric}" for metric in ("accuracy", "macro_f1")
                       if ours[metric]["mean"] != theirs[metric]["mean"]]
    if differ:
        return "differs from the report in " + ", ".join(differ)
    return (f"has the report's test and control accuracy and macro-F1 means for all "
            f"{len(specs)} specs, to the last digit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=None,
                        help="an empty or new directory of yours (default: a new private temp dir)")
    args = parser.parse_args()

    args.workdir = private_workdir(args.workdir, "datamap-bench-sweep-")
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]
    repo = copy_repo(args.workdir / "repo", *GRID)
    sh("dvc", "repro", "cartography", cwd=repo)

    # What each stage process that trains or evaluates pays before its first line of work.
    start = time.perf_counter()
    sh(sys.executable, "-c", "import pytorch_lightning", cwd=repo)
    startup_seconds = time.perf_counter() - start

    start = time.perf_counter()
    output = sh("dvc", "repro", cwd=repo)
    seconds = time.perf_counter() - start
    stages = re.findall(r"Running stage '([^']+)'", output)
    retrains = sum(s.startswith("retrain@") for s in stages)
    table = (repo / "data" / "report" / "summary.md").read_text()

    grid = [f"{short}_{percent}" for short in ("ambiguous", "hard", "easy", "random")
            for percent in (10, 25, 33, 50)]
    sweep_dir = args.workdir / "multirun"
    start = time.perf_counter()
    sh(sys.executable, "-m", "stages.subset", "-m", "hydra/launcher=parallel",
       f"hydra.sweep.dir={sweep_dir}", *GRID, "+spec=" + ",".join(grid), cwd=repo)
    multirun_seconds = time.perf_counter() - start
    same = compare(json.loads((repo / "data" / "report" / "metrics.json").read_text()),
                   json.loads((sweep_dir / "comparison.json").read_text()), grid)

    lines = [
        "# Selection sweep: 4 regions x 4 fractions x 3 seeds",
        "",
        f"`python benchmarks/bench_sweep.py` on {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), Python {platform.python_version()}, "
        f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, {time.strftime('%Y-%m-%d')}.",
        "",
        f"- `dvc repro` after cartography: **{seconds:.0f} s** ({seconds / 60:.1f} min) for "
        f"{len(stages)} stages: {retrains} `retrain` stages (3 seeds each, {3 * retrains} "
        f"fits), as many `select` stages, one `evaluate` stage and the report, each a process "
        f"of its own; besides the fits, each `retrain` process pays the start-up below, and "
        f"DVC works about 2 s around each stage (reading and rewriting `dvc.lock`, hashing and "
        f"caching outputs).",
        "",
        f"- Start-up of a process that trains or evaluates (`python -c \"import "
        f"pytorch_lightning\"`, warm): **{startup_seconds:.1f} s**.",
        "",
        f"- `python -m stages.subset -m hydra/launcher=parallel +spec=<the 16 grid specs>`: "
        f"**{multirun_seconds:.0f} s** ({multirun_seconds / 60:.1f} min) for 48 fits and their "
        f"evaluations, two jobs at a time (joblib reuses its two worker processes, so start-up is "
        f"paid twice, not 48 times). Its `comparison.json` {same}.",
        "",
        "The report of the `dvc repro` run:",
        "",
        table,
    ]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

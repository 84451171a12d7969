"""Benchmark a selection grid on the built-in data: 4 regions x 4 fractions x 3 seeds (48
retrainings, one evaluation per seed) two ways: ``dvc repro`` and a Hydra multirun of
``stages.subset`` on the joblib launcher.

A copy of the repository (git-committed, as a fresh clone) is reproduced up to the cartography
stage first (not timed: that is the part a selection sweep reuses from DVC's cache); then the
timed ``dvc repro`` runs every ``select``, ``retrain`` and ``evaluate`` stage of the grid and the
hand-written specs, and the report, with the preload server that DVC's stage processes hand
their commands to (``datamap.preload``; its log says which stages it ran and how long they took).
With ``--without-preload`` the same stages are then forced to run again with
``DATAMAP_PRELOAD=0``, every one a fresh process importing torch and Lightning itself, and the
benchmark checks that ``dvc.lock`` is unchanged (the same bytes both ways). Then the timed
multirun runs the 16 grid specs from the same cartography scores (``hydra/launcher=parallel``,
two jobs at a time) and the benchmark checks that its comparison table has the report's numbers.
The result goes to ``benchmarks/results/sweep.md`` with the report's table.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_sweep.py [--workdir /tmp/datamap-bench-sweep]
        [--without-preload]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from datamap.preload import served_stages, stop_servers

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "sweep.md"
GRID = ["selection.sweep.regions=[ambiguous,hard_to_learn,easy_to_learn,random]",
        "selection.sweep.fractions=[0.1,0.25,0.33,0.5]", "selection.retrain_seeds=[0,1,2]"]
#: Not copied: at the top of the repository (conf/data/ is a config group, not data/).
TOP_LEVEL = {".venv", ".git", "data", "outputs", "multirun", "mlruns", "wandb"}
ANYWHERE = shutil.ignore_patterns("__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info")


def ignored(directory: str, names: list[str]) -> set[str]:
    """What the copy of the repository leaves out: build products, the DVC cache and data."""
    skip = set(ANYWHERE(directory, names))
    here = Path(directory).resolve()
    if here == ROOT:
        skip |= TOP_LEVEL & set(names)
    elif here == ROOT / ".dvc":
        skip |= {"cache", "tmp"} & set(names)
    return skip


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
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/datamap-bench-sweep"))
    parser.add_argument("--without-preload", action="store_true",
                        help="also time the same stages with DATAMAP_PRELOAD=0")
    args = parser.parse_args()
    # a socket directory of the benchmark's own: its log is this run's, and no server of an
    # earlier run (or of other work) serves it
    sockets = Path(tempfile.mkdtemp(prefix="dmpb-", dir="/tmp"))
    os.environ["DATAMAP_PRELOAD_DIR"] = str(sockets)

    shutil.rmtree(args.workdir, ignore_errors=True)
    repo = args.workdir / "repo"
    shutil.copytree(ROOT, repo, ignore=ignored)
    shutil.copytree(ROOT / "data" / "selections", repo / "data" / "selections")
    env_bin = str(Path(sys.executable).parent)
    os.environ["PATH"] = env_bin + os.pathsep + os.environ["PATH"]
    sh(sys.executable, "-m", "datamap.cli", "compose", *GRID, cwd=repo)
    sh("git", "init", "-q", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm",
       "bench", cwd=repo)
    sh("dvc", "repro", "cartography", cwd=repo)

    # What a stage process that runs on its own pays before its first line of work: the imports
    # a retrain or evaluate stage needs (measured warm, after the cartography stage loaded them).
    start = time.perf_counter()
    sh(sys.executable, "-c", "import pytorch_lightning, torchmetrics", cwd=repo)
    startup_seconds = time.perf_counter() - start
    stop_servers(sockets)  # the cartography run started one: time the grid from a cold start
    time.sleep(2)
    before = len(served_stages(sockets))

    start = time.perf_counter()
    output = sh("dvc", "repro", cwd=repo)
    seconds = time.perf_counter() - start
    stages = re.findall(r"Running stage '([^']+)'", output)
    retrains = sum(s.startswith("retrain@") for s in stages)
    ran = served_stages(sockets)[before:]
    stage_seconds = sum(entry["seconds"] for entry in ran)
    table = (repo / "data" / "report" / "summary.md").read_text()
    lock = (repo / "dvc.lock").read_bytes()

    without = None
    if args.without_preload:
        start = time.perf_counter()
        again = sh("dvc", "repro", "-f", "-s", *stages, cwd=repo, DATAMAP_PRELOAD="0")
        without = time.perf_counter() - start
        assert re.findall(r"Running stage '([^']+)'", again) == stages
        same_lock = (repo / "dvc.lock").read_bytes() == lock

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
        f"{len(stages)} stages: {retrains} `retrain` stages (3 seeds each, "
        f"{3 * retrains} fits), as many `select` and `evaluate` stages, and the report. "
        f"The preload server ran {len(ran)} of them, in {stage_seconds:.0f} s; the "
        f"{len(stages) - len(ran)} before them ran on their own while it started (the first "
        f"one started it), and the rest is DVC's own work around each stage (reading and "
        f"rewriting `dvc.lock`, hashing and caching outputs: about 2 s a stage).",
        "",
        f"- Start-up of a stage process that runs on its own (`python -c \"import "
        f"pytorch_lightning, torchmetrics\"`): **{startup_seconds:.1f} s**, paid by each "
        f"`retrain` and `evaluate` process when preloading is off.",
        "",
        *([f"- The same {len(stages)} stages forced to run again with `DATAMAP_PRELOAD=0` "
           f"(`dvc repro -f -s <those stages>`), each a fresh process: **{without:.0f} s** "
           f"({without / 60:.1f} min); `dvc.lock` afterwards is "
           f"{'byte-identical' if same_lock else 'DIFFERENT'} (the same outputs both ways).",
           ""] if without is not None else []),
        f"- `python -m stages.subset -m hydra/launcher=parallel +spec=<the 16 grid specs>`: "
        f"**{multirun_seconds:.0f} s** ({multirun_seconds / 60:.1f} min) for 48 fits and their "
        f"evaluations, two jobs at a time (joblib reuses its two worker processes, so start-up is "
        f"paid twice, not 48 times). Its `comparison.json` {same}.",
        "",
        "The report of the `dvc repro` run:",
        "",
        table,
    ]
    stop_servers(sockets)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""The paper's scale: an SNLI-shaped set of sentence pairs through the own-data route, end to end.

Generates ``--examples`` training pairs (550,000 by default, SNLI's size) and a 10,000-pair test
file as JSONL in SNLI's layout (``pairID``, ``sentence1``, ``sentence2``, ``gold_label``,
``annotator_labels``):

* labels (entailment / neutral / contradiction) depend learnably on the words: each hypothesis
  carries one or two cue words of its class among filler words;
* 1 % of the pairs are labelled ``-`` (no annotator consensus), dropped by ``drop_labels`` as
  SNLI users do;
* 10 % are *truly ambiguous*: the hypothesis carries cues of two classes and the label is drawn
  at random between them (their ids are kept apart, to check where the map puts them);
* the prepare stage injects 5 % label noise (``data.label_noise``), so the label-noise AUROC of
  the cartography summary measures how well the map finds errors.

A clone-like copy of the repository then runs the README's own-data route (``text_bow``,
``selection=quick``, ``trainer.max_epochs`` below) with ``dvc repro``, one stage at a time in
pipeline order so that each stage's wall time and peak memory (the largest process of the
stage, ``ru_maxrss`` of its children) are its own. Written to ``benchmarks/results/scale.md``:
per-stage time and memory, the whole run against the 30-minute target, the label-noise AUROC
(target >= 0.99) and the share of the truly ambiguous pairs the map calls ambiguous.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py [--examples 550000] [--epochs 5]
        [--workdir DIR]  (default: a new private temporary directory)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# dvc and the stages from this interpreter's environment, activated or not
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "scale.md"
sys.path[:0] = [str(ROOT)]  # tests.helpers: the clone-like copy of the repository

from workdir import private_workdir  # noqa: E402

from tests.helpers import copy_repo  # noqa: E402

CLASSES = ("contradiction", "entailment", "neutral")
CUES_PER_CLASS = 40
FILLERS = 3000
TARGET_MINUTES = 30


def _words(prefix: str, n: int) -> np.ndarray:
    return np.array([f"{prefix}{i:04d}" for i in range(n)])


def snli_like(n: int, seed: int, first_id: int, ambiguous: float = 0.10,
              no_consensus: float = 0.01) -> tuple[pd.DataFrame, np.ndarray]:
    """``n`` pairs in SNLI's layout and the ids of the truly ambiguous ones."""
    rng = np.random.default_rng(seed)
    fillers = _words("w", FILLERS)
    cues = np.stack([_words(f"{c[:3]}", CUES_PER_CLASS) for c in CLASSES])  # [3, cues]
    label = rng.integers(0, 3, n)
    other = (label + rng.integers(1, 3, n)) % 3
    is_ambiguous = rng.random(n) < ambiguous
    # premise: 8-13 filler words; hypothesis: 3-6 fillers, one cue of its class (a second cue
    # of the same class half the time), or for an ambiguous pair one cue of each of two classes
    prem_len = rng.integers(8, 14, n)
    hyp_len = rng.integers(3, 7, n)
    filler_ids = rng.integers(0, FILLERS, (n, 13 + 6))
    cue_a = cues[label, rng.integers(0, CUES_PER_CLASS, n)]
    cue_b = np.where(is_ambiguous, cues[other, rng.integers(0, CUES_PER_CLASS, n)],
                     np.where(rng.random(n) < 0.5, cues[label, rng.integers(0, CUES_PER_CLASS, n)],
                              ""))
    premises, hypotheses = [], []
    for i in range(n):
        words = fillers[filler_ids[i]]
        premises.append(" ".join(words[: prem_len[i]]))
        hyp = list(words[13: 13 + hyp_len[i]])
        hyp.insert(int(filler_ids[i, 0] % (len(hyp) + 1)), cue_a[i])
        if cue_b[i]:
            hyp.insert(int(filler_ids[i, 1] % (len(hyp) + 1)), cue_b[i])
        hypotheses.append(" ".join(hyp))
    # a truly ambiguous pair's label: either of its two classes, at random
    gold = np.where(is_ambiguous & (rng.random(n) < 0.5), other, label)
    names = np.array(CLASSES, dtype=object)[gold]
    names[rng.random(n) < no_consensus] = "-"
    ids = np.arange(first_id, first_id + n)
    frame = pd.DataFrame({
        "annotator_labels": [[x] for x in names], "pairID": ids, "sentence1": premises,
        "sentence2": hypotheses, "gold_label": names,
    })
    return frame, ids[is_ambiguous & (names != "-")]


def route(train: Path, test: Path, epochs: int) -> list[str]:
    """The README's own-data route for SNLI-shaped files (as `datamap compose` overrides)."""
    return ["data=table", "model=text_bow", "selection=quick",
            f"data.source.train={train}", f"data.source.test={test}",
            "data.source.text_columns=[sentence1,sentence2]",
            "data.source.label_column=gold_label", "data.source.id_column=pairID",
            "data.source.drop_labels=['-']", "data.label_noise=0.05",
            f"trainer.max_epochs={epochs}"]


def stage_names(repo: Path) -> list[str]:
    out = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=repo, check=True,
                         capture_output=True, text=True).stdout.split()
    order = ["prepare", "train", "cartography", "select", "retrain", "evaluate", "report"]
    return sorted(out, key=lambda s: (order.index(s.split("@")[0]), s))


def run_stage(repo: Path, stage: str) -> tuple[float, float]:
    """(seconds, peak MiB of the stage's largest process) of ``dvc repro -s stage``."""
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
             "sys.exit(r.returncode)")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", probe, "dvc", "repro", "-s", stage],
                            cwd=repo, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"dvc repro -s {stage} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    peak_kib = int(result.stderr.strip().splitlines()[-1])
    return seconds, peak_kib / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=550_000)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=5)
    # never a fixed name under the shared /tmp: another account could create it first and plant
    # files in the repository copy that the stages then import
    parser.add_argument("--workdir", type=Path, default=None,
                        help="an empty or new directory of yours (default: a new private temp dir)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()

    args.workdir = private_workdir(args.workdir, "datamap-bench-scale-")  # 0700 by default
    inputs = args.workdir / "inputs"
    inputs.mkdir(parents=True)
    start = time.perf_counter()
    train, ambiguous_ids = snli_like(args.examples, seed=0, first_id=0)
    test, _ = snli_like(args.test, seed=1, first_id=10_000_000)
    train.to_json(inputs / "snli_train.jsonl", orient="records", lines=True)
    test.to_json(inputs / "snli_test.jsonl", orient="records", lines=True)
    generated = time.perf_counter() - start
    size_mib = (inputs / "snli_train.jsonl").stat().st_size / 2**20

    overrides = route(inputs / "snli_train.jsonl", inputs / "snli_test.jsonl", args.epochs)
    repo = copy_repo(args.workdir / "repo", *overrides)
    rows, total = [], 0.0
    for stage in stage_names(repo):
        seconds, peak = run_stage(repo, stage)
        total += seconds
        rows.append((stage, seconds, peak))
        print(f"{stage}: {seconds:.0f} s, {peak:.0f} MiB", flush=True)

    data = repo / "data"
    summary = json.loads((data / "cartography" / "summary.json").read_text())
    scores = pd.read_parquet(data / "cartography" / "scores.parquet", columns=["id", "region"])
    in_map = scores[scores["id"].isin(ambiguous_ids)]
    ambiguous_recall = float((in_map["region"] == "ambiguous").mean())
    auroc = summary["noise"]["scores"]["confidence"]["auroc"]
    report = json.loads((data / "report" / "metrics.json").read_text())
    share = {spec: report[spec]["regions"] for spec in report}

    lines = [
        "# The paper's scale: an SNLI-shaped set through the own-data route",
        "",
        f"Command: `OMP_NUM_THREADS=1 python benchmarks/bench_scale.py --examples {args.examples}"
        f" --epochs {args.epochs}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"Python {platform.python_version()}. Each stage is `dvc repro -s <stage>` in a "
        "clone-like copy of the repository, in pipeline order; *peak* is the largest process "
        "of the stage (`ru_maxrss` of its children: DVC's or the stage's).",
        "",
        f"Data: {args.examples:,} training pairs ({size_mib:.0f} MiB of JSONL, generated in "
        f"{generated:.0f} s) and {args.test:,} test pairs; 1 % `-` labels (dropped), 10 % truly "
        "ambiguous pairs, 5 % injected label noise. Route: "
        + " ".join(f"`{o}`" for o in overrides if not o.startswith("data.source.t")
                   or "text_columns" in o) + ".",
        "",
        "| stage | wall time | peak memory |",
        "|---|---:|---:|",
        *(f"| `{s}` | {sec:.0f} s | {peak:,.0f} MiB |" for s, sec, peak in rows),
        f"| **whole run** | **{total / 60:.1f} min** (target < {TARGET_MINUTES} min) | |",
        "",
        f"- Examples on the map: {summary['examples']:,}; regions: "
        + ", ".join(f"{k} {v:,}" for k, v in summary["regions"].items()) + ".",
        f"- Region rule: {summary['regions_rule']['statement']}",
        f"- Label-noise AUROC of 1 - confidence: **{auroc:.4f}** (target >= 0.99); "
        f"{summary['noise']['hard_to_learn_flipped']:,} of {summary['noise']['n_flipped']:,} "
        "flipped labels are hard-to-learn.",
        f"- Truly ambiguous pairs the map calls ambiguous: **{ambiguous_recall:.1%}** of "
        f"{len(in_map):,}.",
        "- Region make-up of each subset (easy / ambiguous / hard): "
        + "; ".join(f"`{spec}` {r['easy_to_learn']:.0%} / {r['ambiguous']:.0%} / "
                    f"{r['hard_to_learn']:.0%}" for spec, r in share.items()) + ".",
        "",
    ]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

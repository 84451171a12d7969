"""Benchmark the review loop: correcting the top-k of the review queue vs k random examples.

The digits demo with injected label noise (``data.label_noise``, 10 % by default), run with the
pipeline's own library functions: ``prepare`` -> the train stage's fit with the dynamics
recorder -> the cartography stage (scores, regions, the review queue) once; then, for every k
and strategy, a simulated reviewer looks at k training examples and restores the true label
(``clean_label``) of each flipped one (a ``relabel``; a correct one is a ``keep``), the decisions
go through ``data/corrections.csv``'s reader and ``prepare`` again, and a model is retrained on
the corrected data (the retrain stage's fit: the configured callbacks without media) and
evaluated on the test set and every control set (the evaluate stage's code), once per seed.

Strategies: **review queue** -- the hard-to-learn examples by confidence, lowest first (the
queue of ``review/hard_to_learn.csv``), continued with the other examples by confidence when k
is longer than the hard-to-learn region; **random** -- k examples drawn at random (a new draw
per seed). Reference rows: no corrections, and every flip restored (the clean labels).

Writes ``benchmarks/results/corrections.md`` and prints it.

Usage::

    python benchmarks/bench_corrections.py [--k 25 50 100 200] [--seeds 0 1 2 3 4]
        [--workdir DIR] [overrides ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from workdir import private_workdir  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "corrections.md"


def reviewed_ids(strategy: str, k: int, seed: int, ranking: np.ndarray) -> np.ndarray:
    """The ids a reviewer looks at: the first k of ``ranking`` (the review queue's order), or
    k drawn at random (seeded) from the training ids."""
    if strategy == "queue":
        return ranking[:k]
    rng = np.random.default_rng([seed, k])
    return np.sort(rng.choice(np.sort(ranking), size=k, replace=False))


def simulated_reviewer(ids: np.ndarray, train, names: list[str], path: Path) -> int:
    """Write the corrections file of a reviewer who knows the true label and looks at ``ids``:
    relabel each flipped example to its clean label, keep the others. Returns the relabels."""
    from datamap.data.corrections import Decision, write_corrections

    position = {int(i): p for p, i in enumerate(train.ids)}
    decisions = []
    for example in ids.tolist():
        p = position[example]
        given, true = int(train.labels[p]), int(train.clean_labels[p])
        decisions.append(Decision(example, "relabel", names[true], "", "simulated")
                         if given != true else Decision(example, "keep", "", "", "simulated"))
    write_corrections(path, decisions)
    return sum(d.action == "relabel" for d in decisions)


def prepare_corrected(cfg, corrections: Path, out: Path) -> None:
    """The prepare stage on the configured data with ``data.corrections`` set to this file."""
    from datamap.data.prepare import prepare_from_config

    data = cfg.data.copy()
    data.corrections = str(corrections)
    prepare_from_config(data, out, seed=cfg.seed)


def retrain_and_evaluate(cfg, prepared: Path, out: Path, seed: int) -> dict:
    """The retrain stage's fit on ``prepared`` with ``seed``, evaluated as the evaluate stage
    does: test and control accuracy, and the flipped labels left in the training split."""
    from datamap.callbacks.compose import without_media
    from datamap.data.splits import read_meta, read_split
    from datamap.evaluation.evaluate import evaluate_model
    from datamap.models.checkpoint import load_model
    from datamap.training.fit import fit_classifier

    cfg = cfg.copy()
    cfg.seed = int(seed)
    cfg.callbacks = without_media(cfg.get("callbacks"))
    fit_classifier(cfg, prepared_dir=prepared, out_dir=out)
    meta = read_meta(prepared)
    metrics, _ = evaluate_model(load_model(out / "model.ckpt"), prepared, meta)
    train = read_split(prepared, "train", meta)
    shutil.rmtree(out)
    return {"test": metrics["test"]["accuracy"],
            "control": {name: m["accuracy"] for name, m in metrics["control"].items()},
            "flipped_left": int((train.labels != train.clean_labels).sum())}


def mean_std(values: list[float]) -> str:
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return f"{array.mean():.4f} ± {std:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, nargs="+", default=[25, 50, 100, 200],
                        help="examples reviewed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="retraining seeds (and random draws)")
    parser.add_argument("overrides", nargs="*",
                        help="config overrides, e.g. data.label_noise=0.2 trainer.max_epochs=10")
    parser.add_argument("--workdir", default=None,
                        help="an empty or new directory of yours (default: a new private temp dir)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    command = " ".join(["python benchmarks/bench_corrections.py",
                        shlex.join(sys.argv[1:] if argv is None else argv)]).strip()

    import logging

    import pandas as pd
    import torch

    from datamap.cartography.run import run_cartography
    from datamap.data.prepare import prepare_from_config
    from datamap.data.splits import read_meta, read_split
    from datamap.io import write_text
    from datamap.pipeline.config import compose
    from datamap.training.fit import fit_classifier

    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")  # library deprecation notices, not results
    load = os.getloadavg()[0]  # other processes on the machine slow every number down
    started = time.perf_counter()
    workdir = private_workdir(args.workdir, "datamap-bench-corrections-")
    cfg = compose(ROOT / "conf", overrides=["trainer.accelerator=cpu", "data.corrections=null",
                                            *args.overrides])

    # the pipeline once: prepare, train with the recorder, cartography (the review queue)
    base = workdir / "prepared"
    prepare_from_config(cfg.data, base, seed=cfg.seed)
    fit_classifier(cfg, prepared_dir=base, out_dir=workdir / "train", record_dynamics=True)
    cartography = cfg.cartography.copy()
    cartography.review_top_k = 10**9  # the whole hard-to-learn region, in queue order
    run_cartography(workdir / "train" / "dynamics.parquet", base, workdir / "cartography",
                    cartography, seed=cfg.seed)
    meta = read_meta(base)
    names = [str(n) for n in meta["class_names"]]
    train = read_split(base, "train", meta)
    if train.clean_labels is None:
        raise SystemExit("the benchmark needs injected label noise (data.label_noise > 0)")
    queue = pd.read_csv(workdir / "cartography" / "review" / "hard_to_learn.csv")
    scores = pd.read_parquet(workdir / "cartography" / "scores.parquet",
                             columns=["id", "confidence"])
    rest = scores[~scores["id"].isin(queue["id"])].sort_values(["confidence", "id"])
    ranking = np.concatenate([queue["id"].to_numpy(), rest["id"].to_numpy()])
    n_flipped = int((train.labels != train.clean_labels).sum())

    rows = []

    def run(label: str, k: int | str, prepared_for_seed) -> None:
        results, found = [], []
        for seed in args.seeds:
            prepared, relabelled = prepared_for_seed(seed)
            results.append(retrain_and_evaluate(cfg, prepared, workdir / "fit", seed))
            found.append(relabelled)
        rows.append({"strategy": label, "k": k, "found": found, "results": results})
        print(f"{label} k={k}: test {mean_std([r['test'] for r in results])}", flush=True)

    def corrected(strategy: str, k: int):
        cache: dict = {}

        def for_seed(seed: int):
            key = 0 if strategy == "queue" else seed  # the queue's top-k is the same each seed
            if key not in cache:
                out = workdir / f"{strategy}_{k}_{key}"
                out.mkdir()
                relabelled = simulated_reviewer(reviewed_ids(strategy, k, seed, ranking), train,
                                                names, out / "corrections.csv")
                prepare_corrected(cfg, out / "corrections.csv", out / "prepared")
                cache[key] = (out / "prepared", relabelled)
            return cache[key]
        return for_seed

    run("no corrections", 0, lambda seed: (base, 0))
    for k in args.k:
        for strategy in ("queue", "random"):
            run("review queue (top-k hard-to-learn)" if strategy == "queue" else "random",
                k, corrected(strategy, k))
    clean = workdir / "clean"
    clean.mkdir()
    simulated_reviewer(np.sort(ranking), train, names, clean / "corrections.csv")
    prepare_corrected(cfg, clean / "corrections.csv", clean / "prepared")
    run("every flip restored (clean labels)", len(ranking),
        lambda seed: (clean / "prepared", n_flipped))
    seconds = time.perf_counter() - started

    controls = list(rows[0]["results"][0]["control"])
    header = ["strategy", "examples reviewed", "flips found", "flipped labels left",
              "test accuracy", *(f"control {c} accuracy" for c in controls)]
    lines = [
        "# Correcting labels: the review queue against random examples",
        "",
        "```",
        command,
        "```",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"no GPU; torch {torch.__version__}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; "
        f"load average before the run {load:.1f}; {seconds / 60:.1f} min in all.",
        "",
        f"Data: {meta['source']}, {len(train)} training examples, {n_flipped} of their labels "
        f"flipped (data.label_noise={meta['label_noise']:g}); model `{cfg.model.net._target_}`,"
        f" {cfg.trainer.max_epochs} epochs. One training run with the dynamics recorder gives "
        "the data map and the review queue (hard-to-learn, lowest confidence first, then the "
        "other examples by confidence); a simulated reviewer restores the true label of every "
        "flipped example among the k it looks at; the decisions go through the corrections "
        "file and `prepare`, and a model is retrained on the corrected data for each seed "
        f"({', '.join(map(str, args.seeds))}; random draws one set of k per seed). Mean ± "
        "sample std over the seeds; flips found and left as mean over the seeds.",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for row in rows:
        results = row["results"]
        cells = [row["strategy"], str(row["k"]), f"{np.mean(row['found']):.1f}",
                 f"{np.mean([r['flipped_left'] for r in results]):.1f}",
                 mean_std([r["test"] for r in results]),
                 *(mean_std([r["control"][c] for r in results]) for c in controls)]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

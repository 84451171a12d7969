"""Benchmark ``model=text_bow``: seconds per epoch on 100,000 generated short texts.

The train stage's own code path (``datamap.training.fit_classifier`` with the dynamics
recorder, the real ``conf/`` composed with ``data=table model=text_bow``) on a prepared text
split of ``--examples`` sentences (5-20 words drawn from a Zipf-distributed vocabulary of
30,000 made-up words; the class is told by a few cue words). One row per loader setting:
``num_workers=0`` hashes n-grams in the training process, ``num_workers=1`` in a DataLoader
worker alongside it (2 cores: one trains, one hashes). The time of each training epoch is
measured from its first to its last batch (validation and the dynamics file excluded; the
median over the epochs after the first is reported with the first separately).

Also times the hashing alone, and scikit-learn's ``HashingVectorizer`` on the same texts and
n-gram ranges for comparison (why ``datamap.models.text`` hashes with NumPy).

Writes ``benchmarks/results/text_bow.md`` and prints it.

Usage::

    python benchmarks/bench_text_bow.py [--examples 100000] [--epochs 4]
        [--workdir DIR]

``--workdir DIR`` keeps the prepared texts (``DIR/texts_N``) and reuses them on the next run
with the same ``--examples``; only a directory of yours that no one else can write is accepted.
Without it, a new private temporary directory is used and nothing is reused.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
from workdir import cached, private_workdir  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "text_bow.md"


def generate_texts(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """``n`` short texts and binary labels: Zipf-distributed filler words, plus 1-2 cue
    words of the class (a tenth of the texts get a cue of the other class too)."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = ["".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(30_000)]
    weights = 1.0 / np.arange(1, len(vocab) + 1)
    weights /= weights.sum()
    cues = [[f"good{i}" for i in range(50)], [f"bad{i}" for i in range(50)]]
    labels = rng.integers(0, 2, n)
    lengths = rng.integers(5, 21, n)
    fillers = rng.choice(len(vocab), size=int(lengths.sum()), p=weights)
    texts, start = [], 0
    for label, length in zip(labels, lengths, strict=True):
        words = [vocab[i] for i in fillers[start:start + length]]
        start += length
        words.insert(int(rng.integers(0, len(words))), cues[label][rng.integers(50)])
        if rng.random() < 0.1:
            words.append(cues[1 - label][rng.integers(50)])
        texts.append(" ".join(words))
    return texts, labels


class EpochTimer(pl.Callback):
    """Wall time of each training epoch, first batch start to last batch end."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def prepare_texts(workdir: Path, n: int) -> Path:
    from datamap.data import RawData
    from datamap.data.prepare import prepare

    out = workdir / f"texts_{n}"
    if cached(out):
        return out
    texts, labels = generate_texts(int(round(n / 0.9)))  # val 0.05, test 0.05
    raw = RawData(labels=labels.astype(np.int64), ids=np.arange(len(labels), dtype=np.int64),
                  class_names=["negative", "positive"], text=np.asarray(texts, dtype=object),
                  input_kind="text", description="generated short texts")
    prepare(raw, out, val=0.05, test=0.05, label_noise=0.0, seed=0)
    return out


def time_hashing(texts: list[str]) -> list[tuple[str, float]]:
    from sklearn.feature_extraction.text import HashingVectorizer

    from datamap.models.text import NgramHasher

    rows = []
    hasher = NgramHasher(word_ngrams=(1, 2), char_ngrams=(3, 5), buckets=2**18)
    start = time.perf_counter()
    for i in range(0, len(texts), 32):
        hasher(texts[i:i + 32])
    rows.append(("datamap NgramHasher, words 1-2 + chars 3-5, batches of 32",
                 time.perf_counter() - start))
    options = {"n_features": 2**18, "alternate_sign": False, "norm": None}
    start = time.perf_counter()
    for i in range(0, len(texts), 32):
        HashingVectorizer(ngram_range=(1, 2), **options).transform(texts[i:i + 32])
        HashingVectorizer(analyzer="char_wb", ngram_range=(3, 5), **options).transform(
            texts[i:i + 32])
    rows.append(("scikit-learn HashingVectorizer, the same ranges, batches of 32",
                 time.perf_counter() - start))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=100_000, help="training texts")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workers", default="0,1", help="num_workers settings to compare")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("overrides", nargs="*", help="more config overrides, e.g. model.net.dim=64")
    parser.add_argument("--workdir", default=None,
                        help="a directory of yours that keeps the prepared data, reused on the "
                        "next run (new, or made by an earlier run: yours, writable by "
                        "you only); default: a new private temp dir, nothing reused")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    command = " ".join(["python benchmarks/bench_text_bow.py",
                        shlex.join(sys.argv[1:] if argv is None else argv)]).strip()

    import logging

    import torch

    from datamap.data import read_split
    from datamap.pipeline.config import compose
    from datamap.training.fit import fit_classifier

    logging.disable(logging.WARNING)
    workdir = private_workdir(args.workdir, "datamap-bench-text-", reuse=True)
    load = os.getloadavg()[0]  # other processes on the machine slow every number down
    prepared = prepare_texts(workdir, args.examples)
    train = read_split(prepared, "train")
    words = np.mean([len(t.split()) for t in train.text[:10_000]])

    rows = []
    for workers in (int(w) for w in args.workers.split(",")):
        cfg = compose(ROOT / "conf", overrides=[
            "data=table", "data.source.train=unused", "model=text_bow",
            f"trainer.max_epochs={args.epochs}", "trainer.accelerator=cpu",
            f"data.datamodule.num_workers={workers}",
            f"data.datamodule.batch_size={args.batch_size}",
            "data.datamodule.eval_batch_size=1024", "logger=none", *args.overrides])
        timer = EpochTimer()
        out = workdir / f"run_workers{workers}"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        metrics = fit_classifier(cfg, prepared_dir=prepared, out_dir=out, record_dynamics=True,
                                 callbacks=[timer])
        total = time.perf_counter() - start
        rows.append({"workers": workers, "first": timer.seconds[0],
                     "median": statistics.median(timer.seconds[1:] or timer.seconds),
                     "total": total, "val_acc": metrics["val"]["accuracy"]})
        print(rows[-1], flush=True)
    hashing = time_hashing(train.text.tolist())

    lines = [
        "# text_bow training speed",
        "",
        "```",
        command,
        "```",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"no GPU; torch {torch.__version__}, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS')}. {len(train):,} training texts "
        f"(mean {words:.1f} words), batch {args.batch_size}, `model=text_bow` "
        f"{' '.join(args.overrides) or '(defaults)'}, the dynamics recorder on; "
        f"load average before the run {load:.1f}.",
        "",
        "| loader | first epoch | later epochs (median) | whole fit | val accuracy |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        loader = ("hashing in the training process (num_workers=0)" if r["workers"] == 0 else
                  f"hashing in {r['workers']} DataLoader worker(s) (num_workers={r['workers']})")
        lines.append(f"| {loader} | {r['first']:.2f} s | {r['median']:.2f} s | "
                     f"{r['total']:.1f} s | {r['val_acc']:.4f} |")
    lines += ["", f"Hashing the {len(train):,} training texts once (one core):", "",
              "| hasher | seconds |", "|---|---:|"]
    lines += [f"| {name} | {seconds:.2f} s |" for name, seconds in hashing]
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

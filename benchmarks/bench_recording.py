"""Benchmark the cost of recording training dynamics.

The same training (``datamap.training.fit_classifier``, as the train stage runs it, with a
persistent checkpoint directory) with and without the recorder, runs interleaved
(none, train_pass, eval_pass, none, ...) and summarised by medians:

(a) the built-in digits with the real default config (MLP, 20 epochs);
(b) a synthetic Gaussian-mixture set with 200,000 training examples through the same
    Classifier/DataModule (a few epochs).

Two measures of the overhead: the difference of median wall times (end-to-end, including the
dynamics files written at the end), and the time spent inside the recorder's hooks measured
directly (less noisy; every hook here is synchronous on the CPU).

Before that, the recorder's two units of work in isolation, in thread CPU time (minimum over
repeats, so other processes on a shared machine hardly move it): the per-batch bookkeeping of
``train_pass`` (reading ids and labels, shape checks, keeping references) and the reduction of a
record's logits to the stored values (with the finite flag).

Writes ``benchmarks/results/recording.md`` (``--skip-training``: only
``benchmarks/results/recording_units.md``) and prints them.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_recording.py [--repeats 7] [--synthetic-repeats 5]
        [--synthetic-examples 200000] [--synthetic-epochs 3] [--workdir DIR]
        [--skip-training]

``--workdir DIR`` keeps the prepared data sets (``DIR/digits``, ``DIR/synthetic_N``) and
reuses them on the next run; only a directory of yours that no one else can write is accepted.
Without it, a new private temporary directory is used and nothing is reused.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from workdir import cached, private_workdir  # noqa: E402

from datamap.dynamics.recorder import DynamicsRecorder  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "recording.md"
UNIT_RESULTS = HERE / "results" / "recording_units.md"

HOOKS = ("on_train_epoch_start", "on_train_batch_end", "on_train_epoch_end",
         "on_validation_epoch_start", "on_validation_batch_end", "on_validation_epoch_end",
         "on_fit_start", "on_train_start", "on_fit_end", "state_dict", "teardown")


class TimedRecorder(DynamicsRecorder):
    """The recorder, with the time spent in its hooks accumulated in ``TimedRecorder.seconds``
    (``on_fit_end``, which writes the parquet files, separately in ``TimedRecorder.final``)."""

    seconds = 0.0
    final = 0.0


def _timed(name):
    inner = getattr(DynamicsRecorder, name)

    def hook(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(self, *args, **kwargs)
        finally:
            if name == "on_fit_end":
                TimedRecorder.final += time.perf_counter() - start
            else:
                TimedRecorder.seconds += time.perf_counter() - start

    return hook


for _name in HOOKS:
    setattr(TimedRecorder, _name, _timed(_name))


MODES = {
    "none": None,
    "empty callback": None,
    "train_pass": ["dynamics.mode=train_pass"],
    "eval_pass": ["dynamics.mode=eval_pass", "dynamics.records_per_epoch=1"],
    "eval_pass R=4": ["dynamics.mode=eval_pass", "dynamics.records_per_epoch=4"],
}


def _empty_callback():
    import pytorch_lightning as pl

    class Empty(pl.Callback):
        pass

    return Empty()


def prepare_digits(workdir: Path, cfg) -> Path:
    from datamap.data.prepare import prepare_from_config

    out = workdir / "digits"
    if not cached(out):
        prepare_from_config(cfg.data, out, seed=cfg.seed)
    return out


def prepare_synthetic(workdir: Path, n_train: int, features: int = 32, classes: int = 10) -> Path:
    """A Gaussian mixture (one component per class, overlapping) with n_train training rows."""
    from datamap.data import RawData
    from datamap.data.prepare import prepare

    out = workdir / f"synthetic_{n_train}"
    if cached(out):
        return out
    n = int(round(n_train / 0.8))  # val 0.1, test 0.1
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, n)
    centres = rng.normal(0.0, 1.0, size=(classes, features)).astype(np.float32)
    x = (centres[labels] + rng.normal(0.0, 1.5, size=(n, features))).astype(np.float32)
    raw = RawData(x=x, labels=labels.astype(np.int64), ids=np.arange(n, dtype=np.int64),
                  class_names=[f"c{i}" for i in range(classes)], input_kind="tabular",
                  description="Gaussian mixture")
    prepare(raw, out, val=0.1, test=0.1, label_noise=0.1, seed=0)
    return out


def run_case(name: str, prepared: Path, overrides: list[str], modes: list[str], repeats: int,
             workdir: Path) -> list[dict]:
    from datamap.pipeline.config import compose
    from datamap.training.fit import fit_classifier

    # one untimed run first: imports, caches and the prepared data's first read
    fit_classifier(compose(ROOT / "conf", overrides=overrides), prepared_dir=prepared,
                   out_dir=workdir / "runs" / "warmup" / "train", record_dynamics=False,
                   checkpoint_dir=workdir / "runs" / "warmup" / "checkpoints")
    times: dict[str, list[float]] = {m: [] for m in modes}
    hooks: dict[str, list[float]] = {m: [] for m in modes}
    final: dict[str, list[float]] = {m: [] for m in modes}
    for rep in range(repeats):
        for mode in modes:
            extra = MODES[mode] or []
            cfg = compose(ROOT / "conf", overrides=[
                *overrides, *extra, "dynamics._target_=__main__.TimedRecorder"])
            out = workdir / "runs" / name / mode.replace(" ", "_").replace("=", "")
            TimedRecorder.seconds = TimedRecorder.final = 0.0
            start = time.perf_counter()
            fit_classifier(cfg, prepared_dir=prepared, out_dir=out / "train",
                           record_dynamics=MODES[mode] is not None,
                           checkpoint_dir=out / "checkpoints",
                           callbacks=[_empty_callback()] if mode == "empty callback" else [])
            elapsed = time.perf_counter() - start
            times[mode].append(elapsed)
            hooks[mode].append(TimedRecorder.seconds)
            final[mode].append(TimedRecorder.final)
            print(f"  {name} | {mode:14s} | rep {rep}: {elapsed:7.3f} s (recorder: "
                  f"{TimedRecorder.seconds:.3f} s during training, {TimedRecorder.final:.3f} s "
                  "writing the files)", flush=True)
    # one more "none" run closes the last repeat: every run then sits between two "none" runs
    cfg = compose(ROOT / "conf", overrides=overrides)
    start = time.perf_counter()
    fit_classifier(cfg, prepared_dir=prepared, out_dir=workdir / "runs" / "last" / "train",
                   record_dynamics=False, checkpoint_dir=workdir / "runs" / "last" / "ckpt")
    closing = time.perf_counter() - start
    bracket = [(a + b) / 2 for a, b in zip(times["none"], times["none"][1:] + [closing],
                                           strict=True)]
    base = statistics.median(times["none"])
    rows = []
    for mode in modes:
        wall = statistics.median(times[mode])
        # paired: each run against the mean of the "none" runs before and after it
        paired = statistics.median(
            100.0 * (t - b) / b for t, b in zip(times[mode], bracket, strict=True))
        in_hooks = statistics.median(hooks[mode])
        writing = statistics.median(final[mode])
        rows.append({
            "case": name, "mode": mode, "wall": wall,
            "spread": (min(times[mode]), max(times[mode])),
            "delta": 100.0 * (wall - base) / base, "paired": paired,
            "hooks": in_hooks, "hooks_pct": 100.0 * in_hooks / wall if wall else 0.0,
            "final": writing, "final_pct": 100.0 * writing / wall if wall else 0.0,
        })
    return rows


def _thread_seconds(fn, repeats: int) -> float:
    """The least thread CPU time of ``repeats`` calls of ``fn``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        best = min(best, time.thread_time() - start)
    return best


def _record(logits, gold) -> None:
    """One record of ``logits`` in one batch: checks, reduction, finite flag."""
    import torch

    from datamap.dynamics import accumulate

    acc = accumulate.RecordAccumulator(logits.shape[1], False, "float32", "training_step")
    acc.add(logits, {"id": torch.arange(len(gold)), "label": gold})
    acc.finish(torch.device("cpu"))


def unit_costs(command: str) -> str:
    """The per-batch bookkeeping and the per-record reduction, timed alone (markdown)."""
    import torch

    from datamap.dynamics import accumulate
    from datamap.dynamics.contract import step_logits

    lines = ["# Recording cost: the units of work", "", "```", command, "```", "",
             f"torch {torch.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
             "thread CPU time, least of 7 repeats.", "",
             "| work | size | time |", "|---|---|---:|"]
    calls = 20_000
    batch = {"x": torch.zeros(32, 64), "id": torch.arange(32), "label": torch.zeros(32).long()}
    outputs = {"loss": torch.tensor(0.0), "logits": torch.randn(32, 10)}

    def bookkeeping():  # 20,000 x 320 logits stay under REDUCE_ELEMENTS: nothing is reduced
        acc = accumulate.RecordAccumulator(10, False, "float32", "training_step")
        for _ in range(calls):
            acc.add(step_logits(outputs, "training_step"), batch)

    per_batch = _thread_seconds(bookkeeping, 7) / calls
    lines.append(f"| train_pass bookkeeping per batch (`on_train_batch_end`) | batch 32, 10 "
                 f"classes | {per_batch * 1e6:.1f} µs |")
    generator = torch.Generator().manual_seed(0)
    for rows, classes in ((200_000, 2), (200_000, 10), (20_000, 100)):
        logits = torch.randn(rows, classes, generator=generator) * 5
        gold = torch.randint(0, classes, (rows,), generator=generator)
        seconds = _thread_seconds(partial(_record, logits, gold), 7)
        lines.append(f"| a record's checks, reduction to the stored values and finite flag | "
                     f"{rows:,} x {classes} logits | {seconds * 1e3:.1f} ms "
                     f"({seconds / (rows * classes) * 1e9:.2f} ns per logit) |")
    lines += ["", "The bookkeeping runs on the training thread at every batch; the reduction "
              "runs once per record (on the CPU on a background thread, chunk by chunk, while "
              "the epoch goes on).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="interleaved runs for digits")
    parser.add_argument("--synthetic-repeats", type=int, default=5)
    parser.add_argument("--synthetic-examples", type=int, default=200_000)
    parser.add_argument("--synthetic-epochs", type=int, default=3)
    parser.add_argument("--workdir", default=None,
                        help="a directory of yours that keeps the prepared data, reused on the "
                        "next run (new, or made by an earlier run: yours, writable by "
                        "you only); default: a new private temp dir, nothing reused")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--skip-training", action="store_true",
                        help="only time the units of work (writes recording_units.md)")
    args = parser.parse_args(argv)
    command = " ".join(["OMP_NUM_THREADS=1 python benchmarks/bench_recording.py",
                        shlex.join(sys.argv[1:] if argv is None else argv)]).strip()
    units = unit_costs(command)
    UNIT_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    UNIT_RESULTS.write_text(units, encoding="utf-8")
    print(units)
    if args.skip_training:
        return 0

    import torch

    from datamap.pipeline.config import compose

    logging.disable(logging.WARNING)
    for name in ("pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    workdir = private_workdir(args.workdir, "datamap-bench-recording-", reuse=True)
    if (workdir / "runs").exists():
        shutil.rmtree(workdir / "runs")

    started = time.perf_counter()
    base = ["trainer.enable_progress_bar=false"]
    digits = prepare_digits(workdir, compose(ROOT / "conf"))
    rows = run_case("digits MLP (default config: 1,167 train, 20 epochs, batch 32)", digits,
                    base, ["none", "empty callback", "train_pass", "eval_pass"], args.repeats,
                    workdir)
    synthetic = prepare_synthetic(workdir, args.synthetic_examples)
    n = args.synthetic_examples
    rows += run_case(
        f"synthetic Gaussian mixture ({n:,} train x 32 features, 10 classes, "
        f"{args.synthetic_epochs} epochs, batch 256)", synthetic,
        [*base, f"trainer.max_epochs={args.synthetic_epochs}", "data.datamodule.batch_size=256",
         "data.datamodule.eval_batch_size=4096"],
        ["none", "empty callback", "train_pass", "eval_pass", "eval_pass R=4"],
        args.synthetic_repeats, workdir)
    total = time.perf_counter() - started

    lines = [
        "# Recording cost",
        "",
        "```",
        command,
        "```",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"no GPU used; torch {torch.__version__}, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS')}. Benchmark wall time {total:.0f} s.",
        "",
        "Each row: the train stage's `fit_classifier` (persistent checkpoint directory, "
        "checkpoints and CSV logs as configured), runs interleaved across modes; median wall "
        "time over the repeats (min-max in brackets), after one untimed warm-up run. "
        "*vs none*: median over the repeats of each run's wall time against the mean of the "
        "`none` runs just before and after it (this VM's run-to-run spread is several %, see "
        "min-max). *empty "
        "callback* is a Lightning Callback that overrides nothing: what any callback costs in "
        "Lightning's per-batch hook dispatch. The recorder's own "
        "time is measured inside its callbacks: "
        "*during training* is everything it does while the epochs run (per-batch bookkeeping, "
        "reductions, checks, resume parts; work it hands to its background thread is not "
        "counted, only waits for it), *writing the files* is `on_fit_end` building, validating "
        "and writing the compressed `dynamics.parquet` once (the stage's output, which a "
        "run without recording does not produce).",
        "",
        "| case | mode | wall s (min-max) | vs none | recorder during training | "
        "writing the files |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["spread"]
        delta = "—" if r["mode"] == "none" else f"{r['paired']:+.1f}%"
        recorded = r["mode"] not in ("none", "empty callback")
        hook = f"{r['hooks']:.3f} s ({r['hooks_pct']:.1f}%)" if recorded else "—"
        final = f"{r['final']:.3f} s ({r['final_pct']:.1f}%)" if recorded else "—"
        lines.append(f"| {r['case']} | {r['mode']} | {r['wall']:.2f} ({lo:.2f}-{hi:.2f}) | "
                     f"{delta} | {hook} | {final} |")
    lines += [
        "",
        "`train_pass` reads the logits the training step already computed: per batch it reads "
        "the batch's ids and labels, checks shapes and keeps references (no host "
        "synchronisation); values are derived in one vectorised step and moved to the host once "
        "per epoch (see `recording_units.md` for both costs alone). `eval_pass` adds "
        "one inference pass over the training set per record (R records per epoch).",
        "",
    ]
    text = "\n".join(lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

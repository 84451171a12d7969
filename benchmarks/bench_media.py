"""Benchmark the cost of the media callbacks (prediction samples, image predictions, confusion
matrix) and of the training curves.

The train stage's fit on the built-in digits (``datamap.training.fit_classifier`` with the real
default config and the CSV logger), with and without the media callbacks, runs interleaved and
summarised by medians; the time spent inside the media callbacks' epoch-end hooks (drawing,
PNG encoding, writing) is also measured directly, which is less noisy.

Writes ``benchmarks/results/media.md`` and prints it.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_media.py [--repeats 5] [--epochs 20]
        [--workdir DIR]
        (default: a new private temporary directory; a DIR of yours must be empty or new)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "media.md"

from workdir import private_workdir  # noqa: E402

MEDIA = ("prediction_samples", "image_predictions", "confusion_matrix")


def timed_media(seconds: list[float]) -> None:
    """Accumulate the time of every media callback's ``on_validation_epoch_end`` in
    ``seconds[0]`` (the per-batch collection is part of the wall-time difference)."""
    from datamap.callbacks.media import ValidationMedia

    inner = ValidationMedia.on_validation_epoch_end

    def hook(self, trainer, pl_module):
        start = time.perf_counter()
        try:
            return inner(self, trainer, pl_module)
        finally:
            seconds[0] += time.perf_counter() - start

    ValidationMedia.on_validation_epoch_end = hook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="an empty or new directory of yours (default: a new private temp dir)")
    args = parser.parse_args()

    import logging

    from hydra.utils import instantiate

    from datamap.data.prepare import prepare
    from datamap.pipeline.config import compose
    from datamap.training.fit import fit_classifier

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    args.workdir = private_workdir(args.workdir, "datamap-bench-media-")
    base = [f"trainer.max_epochs={args.epochs}", "trainer.accelerator=cpu"]
    cfg = compose(ROOT / "conf", overrides=base)
    prepared = args.workdir / "prepared"
    prepare(instantiate(cfg.data.source).load(), prepared, val=cfg.data.split.val,
            test=cfg.data.split.test, label_noise=cfg.data.label_noise,
            control=instantiate(cfg.data.control), seed=cfg.seed)
    configs = {"without media": compose(ROOT / "conf", overrides=[
                   *base, *(f"~callbacks.{name}" for name in MEDIA)]),
               "with media": cfg}
    seconds = [0.0]
    timed_media(seconds)
    wall: dict[str, list[float]] = {name: [] for name in configs}
    inside: list[float] = []
    for repeat in range(args.repeats):
        for name, conf in configs.items():
            seconds[0] = 0.0
            start = time.perf_counter()
            fit_classifier(conf, prepared_dir=prepared, out_dir=args.workdir / f"run{repeat}",
                           record_dynamics=True)
            wall[name].append(time.perf_counter() - start)
            if name == "with media":
                inside.append(seconds[0])
            print(f"{name}: {wall[name][-1]:.2f} s", file=sys.stderr)

    none, media = (statistics.median(wall[n]) for n in configs)
    hooks = statistics.median(inside)
    lines = [
        "# Media callbacks: cost per fit",
        "",
        f"`python benchmarks/bench_media.py --repeats {args.repeats} --epochs {args.epochs}` "
        f"on {platform.machine()}, {os.cpu_count()} CPU(s), OMP_NUM_THREADS="
        f"{os.environ['OMP_NUM_THREADS']}; digits MLP (1,167 training, 270 validation examples), "
        "CSV logger, the train stage's fit (dynamics recorded); medians of interleaved runs.",
        "",
        "| fit | wall time | per epoch |",
        "|---|---:|---:|",
        f"| without media callbacks | {none:.2f} s | {1000 * none / args.epochs:.0f} ms |",
        f"| with prediction samples, image predictions, confusion matrix | {media:.2f} s | "
        f"{1000 * media / args.epochs:.0f} ms |",
        f"| difference | {media - none:+.2f} s ({100 * (media - none) / none:+.0f} %) | "
        f"{1000 * (media - none) / args.epochs:+.0f} ms |",
        f"| time inside the media callbacks' epoch-end hooks | {hooks:.2f} s | "
        f"{1000 * hooks / args.epochs:.0f} ms |",
        "",
        "Each epoch draws three images (Pillow, no matplotlib), writes three PNGs and one CSV.",
        "",
    ]
    text = "\n".join(lines)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()

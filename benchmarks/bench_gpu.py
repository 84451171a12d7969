"""The GPU path, end to end: train (with and without recording) and cartography on a GPU.

Run it whenever a machine with a CUDA GPU is at hand; it needs no network (a tiny BERT is
written locally, as the tests do). Cases, each a real ``fit_classifier`` as the train stage runs
it, with ``trainer=gpu``:

* ``model=mlp`` on the built-in digits, float32, recording on and off;
* ``model=mlp`` with ``trainer.precision=bf16-mixed``, recording on;
* ``model=hf`` (a tiny local BERT) on generated sentences, float32 and bf16-mixed, recording on.

For every recorded run the dynamics are scored as the cartography stage does
(``compute_scores``), and the table says whether every score is finite and whether a second
identical run gave byte-identical dynamics on the same device (GPU kernels differ from the
CPU's, so GPU bytes are not expected to equal CPU bytes; within one GPU they should repeat).

Usage::

    python benchmarks/bench_gpu.py [--epochs 3] [--out benchmarks/results/gpu.md]
    python benchmarks/bench_gpu.py --device cpu --out /tmp/gpu-dry-run.md   # the same on a CPU

Exits 1 without a CUDA device (nothing written), unless ``--device cpu``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT)]  # tests.helpers: the generated data and the tiny transformer


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _prepare(kind: str, work: Path) -> Path:
    from datamap.data import TableSource
    from datamap.data.prepare import prepare, prepare_from_config
    from tests.helpers import compose_cfg, sentiment_frame

    out = work / f"prepared_{kind}"
    if kind == "digits":
        cfg = compose_cfg()
        prepare_from_config(cfg.data, out, seed=0)
    else:
        sentiment_frame(2000, seed=1).to_csv(work / "text.csv", index=False)
        source = TableSource(train=str(work / "text.csv"), text_columns=["sentence"])
        prepare(source.load(), out, val=0.1, test=0.1, label_noise=0.1, seed=0)
    return out


def _case(name: str, prepared: Path, work: Path, overrides: list[str],
          record: bool, device: str) -> dict:
    import torch

    from datamap.scoring.scores import compute_scores
    from datamap.training.fit import fit_classifier
    from tests.helpers import compose_cfg

    cfg = compose_cfg(*overrides)
    cfg.trainer.accelerator = device  # compose_cfg pins the CPU for tests; a GPU is the point
    gpu = device == "gpu"
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    digests = []
    row: dict = {"case": name, "recording": "on" if record else "off"}
    for attempt in range(2 if record else 1):
        out = work / f"{name}_{attempt}"
        started = time.perf_counter()
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        metrics = fit_classifier(cfg, prepared_dir=prepared, out_dir=out,
                                 record_dynamics=record)
        sync()
        row.setdefault("train_s", time.perf_counter() - started)
        row["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20 if gpu else 0.0
        row["val_acc"] = metrics["val"]["accuracy"]
        if record:
            started = time.perf_counter()
            scores = compute_scores(out / "dynamics.parquet")
            row.setdefault("scores_s", time.perf_counter() - started)
            row["examples"] = len(scores)
            row["finite"] = bool(scores[["confidence", "variability"]].notna().all().all())
            digests.append(_digest(out / "dynamics.parquet"))
    if record:
        row["same_bytes_twice"] = len(set(digests)) == 1
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gpu.md")
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu",
                        help="cpu: a dry run of the same cases (checks the script, not a GPU)")
    args = parser.parse_args()
    import torch

    from datamap.io import write_text

    if args.device == "gpu" and not torch.cuda.is_available():
        print("no CUDA device: the GPU path cannot be measured here", file=sys.stderr)
        sys.exit(1)
    from tests.helpers import write_tiny_transformer

    epochs = f"trainer.max_epochs={args.epochs}"
    rows = []
    with tempfile.TemporaryDirectory(prefix="datamap-gpu-") as tmp:
        work = Path(tmp)
        digits, text = _prepare("digits", work), _prepare("text", work)
        bert = write_tiny_transformer(work / "bert")
        hf = ["model=hf", f"model.net.pretrained={bert}", "model.net.local_files_only=true",
              "model.net.max_length=32"]
        cases = [
            ("mlp", digits, [epochs], True),
            ("mlp", digits, [epochs], False),
            ("mlp-bf16", digits, [epochs, "trainer.precision=bf16-mixed"], True),
            ("hf", text, [epochs, *hf], True),
            ("hf-bf16", text, [epochs, *hf, "trainer.precision=bf16-mixed"], True),
        ]
        for name, prepared, overrides, record in cases:
            rows.append(_case(name, prepared, work, overrides, record, args.device))
            print(rows[-1], flush=True)
    device = torch.cuda.get_device_name(0) if args.device == "gpu" else "CPU (dry run)"
    lines = [
        "# The GPU path", "",
        f"Command: `python benchmarks/bench_gpu.py --epochs {args.epochs} --device "
        f"{args.device}`", "",
        f"Device: {device}; torch {torch.__version__}, CUDA {torch.version.cuda}.", "",
        "| case | recording | train | scores | GPU peak | val acc | examples | finite | "
        "same bytes twice |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['case']}` | {r['recording']} | {r['train_s']:.1f} s | "
            f"{r.get('scores_s', float('nan')):.2f} s | {r['gpu_peak_mib']:.0f} MiB | "
            f"{r['val_acc']:.3f} | {r.get('examples', '-')} | {r.get('finite', '-')} | "
            f"{r.get('same_bytes_twice', '-')} |")
    write_text(args.out, "\n".join(lines) + "\n")  # atomic, through a private temporary
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

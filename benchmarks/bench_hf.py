"""``model=hf`` on a CPU: a small BERT fine-tuned on 10,000 generated sentence pairs.

Nothing is downloaded: the BERT is built from its configuration (4 layers, hidden size 256, the
size of Google's "BERT-small"; random weights) with a WordPiece vocabulary over the generated
words, and saved with ``save_pretrained`` -- the same files a hub model gives, so the backbone,
its tokenizer and the recorder run exactly as with a pretrained model (the accuracy says nothing
about a pretrained one). The train stage's fit (``fit_classifier`` with dynamics recorded) runs
for ``--epochs`` epochs in four configurations, each in the same process:

* float32, a first fit: each split tokenised once, in one call, and its tokens stored (the
  default; the token store is a fresh directory);
* float32, a later fit on the same splits (a retrain): every token read from the store;
* float32, every batch tokenised afresh (no store, the encoder's cache switched off): what
  the two above save;
* ``trainer.precision=bf16-mixed`` (``--bf16-epochs``, default 1: it is slow on a CPU).

Written to ``benchmarks/results/hf.md``: seconds per epoch, examples per second, how many
examples the encoders tokenised, and the validation accuracy of the saved model.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_hf.py [--pairs 10000] [--epochs 2]
        [--bf16-epochs 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT)]  # tests.helpers: the generated pairs and their words

RESULTS = HERE / "results" / "hf.md"


def small_bert(folder: Path) -> Path:
    """A BERT-small-sized model (random weights) and a WordPiece tokenizer, saved locally."""
    from tests.helpers import write_tiny_transformer

    return write_tiny_transformer(folder, hidden=256, layers=4, heads=4, intermediate=1024,
                                  positions=128, num_labels=3)


class _NoCache:
    """Wraps the model's encoder so that every batch is tokenised afresh."""

    def __init__(self, encoder):
        self.encoder = encoder

    def __call__(self, batch):
        self.encoder._cache.clear()
        return self.encoder(batch)


def run(name: str, prepared: Path, work: Path, overrides: list[str], epochs: int,
        cache: bool) -> dict:
    from datamap.models.hf import HFTransformer
    from datamap.training.fit import fit_classifier
    from tests.helpers import compose_cfg

    cfg = compose_cfg(f"trainer.max_epochs={epochs}", *overrides)
    encoders = []
    original = HFTransformer.batch_encoder

    def counted(self):
        encoder = original(self)
        encoders.append(encoder)
        return encoder if cache else _NoCache(encoder)

    HFTransformer.batch_encoder = counted
    try:
        started = time.perf_counter()
        metrics = fit_classifier(cfg, prepared_dir=prepared, out_dir=work / name,
                                 record_dynamics=True)
        seconds = time.perf_counter() - started
    finally:
        HFTransformer.batch_encoder = original
    train = metrics["train_examples"]
    return {"name": name, "per_epoch": seconds / epochs, "rate": train * epochs / seconds,
            "tokenised": sum(e.tokenised for e in encoders), "val_acc": metrics["val"]["accuracy"],
            "train": train}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--bf16-epochs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    import torch

    from datamap.data import TableSource
    from datamap.data.prepare import prepare
    from datamap.io import write_text
    from tests.helpers import pairs_frame

    rows = []
    with tempfile.TemporaryDirectory(prefix="datamap-bench-hf-") as tmp:
        work = Path(tmp)
        pairs_frame(args.pairs, seed=3, dropped=0).to_json(work / "pairs.jsonl",
                                                           orient="records", lines=True)
        source = TableSource(train=str(work / "pairs.jsonl"), label_column="gold_label",
                             text_columns=["sentence1", "sentence2"])
        prepare(source.load(), work / "prepared", val=0.1, test=0.1, label_noise=0.05, seed=0)
        bert = small_bert(work / "bert")
        hf = ["model=hf", f"model.net.pretrained={bert}", "model.net.local_files_only=true",
              "model.net.max_length=48", "data.datamodule.batch_size=32"]
        store = [f"model.net.token_cache={work / 'tokens'}"]
        for k, (name, overrides, cache, epochs) in enumerate((
                ("float32, first fit: tokenised once, tokens stored", [*hf, *store], True,
                 args.epochs),
                ("float32, a later fit: tokens read from the store", [*hf, *store], True,
                 args.epochs),
                ("float32, every batch tokenised afresh", [*hf, "model.net.token_cache=null"],
                 False, args.epochs),
                ("bf16-mixed, tokens read from the store",
                 [*hf, *store, "trainer.precision=bf16-mixed"], True, args.bf16_epochs))):
            rows.append(run(f"run{k}", work / "prepared", work, overrides, epochs, cache)
                        | {"label": name, "epochs": epochs})
            print(rows[-1], flush=True)
    lines = [
        "# `model=hf` on a CPU: a BERT-small-sized model on generated sentence pairs", "",
        f"Command: `OMP_NUM_THREADS=1 python benchmarks/bench_hf.py --pairs {args.pairs} "
        f"--epochs {args.epochs} --bf16-epochs {args.bf16_epochs}`", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}. "
        f"{rows[0]['train']:,} training pairs (of {args.pairs:,}), 4 layers, hidden 256, "
        "max_length 48, batch 32, dynamics recorded (train_pass). Random weights: the accuracy "
        "is not a pretrained model's.", "",
        "| configuration | epochs | s / epoch | pairs / s | examples tokenised | "
        "val accuracy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['label']} | {r['epochs']} | {r['per_epoch']:.1f} | "
                     f"{r['rate']:.0f} | {r['tokenised']:,} | {r['val_acc']:.3f} |")
    lines += ["", "Examples tokenised: by every encoder of the fit (the train loader, the "
              "validation loader and the recorder's), not counting the 32 per split "
              "re-tokenised to check tokens read from the store."]
    first, later, afresh = rows[0], rows[1], rows[2]
    lines += ["", f"Reading: a later fit on the same splits tokenises {later['tokenised']:,} "
              f"examples (the first {first['tokenised']:,}; {afresh['tokenised']:,} when every "
              "batch tokenises afresh), but on a CPU the tokenizer is a small part of an epoch "
              f"({later['per_epoch']:.1f} / {first['per_epoch']:.1f} / "
              f"{afresh['per_epoch']:.1f} s): the forward and backward passes dominate. The "
              "store pays where epochs are fast (GPUs) and over the many fits of a selection "
              "grid. bf16-mixed is much slower on a CPU without native bfloat16 arithmetic: use "
              "it on GPUs. The generated labels follow cue words, which the model learns from "
              "random weights; equal accuracies show the runs agree."]
    write_text(args.out, "\n".join(lines) + "\n")  # atomic, through a private temporary
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Helpers shared by the test modules (fixtures live in conftest.py).

Test modules import from here, never from each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]

#: Overrides that shrink the real config for in-process tests (a few epochs, CPU); they run in
#: temporary directories, without the repository's data/corrections.csv.
TINY = ["trainer.max_epochs=3", "trainer.accelerator=cpu", "data.corrections=null"]


def compose_cfg(*overrides: str):
    """The real ``conf/`` composed with :data:`TINY` and ``overrides``."""
    from datamap.pipeline.config import compose

    return compose(ROOT / "conf", overrides=[*TINY, *overrides])


# --------------------------------------------------------------------------------------------
# subprocesses: stage scripts, dvc, the datamap command


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this interpreter's bin first, one torch thread."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
        "DVC_NO_ANALYTICS": "1",
        "HYDRA_FULL_ERROR": "0",
        **extra,
    }


def sh(*args: str, cwd: Path, check: bool = True, timeout: int = 900,
       **env: str) -> subprocess.CompletedProcess:
    """Run a command; with ``check`` fail the test with its output when it exits non-zero."""
    result = subprocess.run(args, cwd=cwd, env=subprocess_env(**env), capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def run_stage(name: str, *overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m stages.NAME`` on ``conf/`` in ``cwd``, logging to stdout as under DVC (so
    stderr holds only what a failed stage says), writing nothing outside ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", f"stages.{name}", "hydra.run.dir=.", "hydra.output_subdir=null",
         "hydra/job_logging=stdout", "hydra/hydra_logging=none", *overrides],
        cwd=cwd, env=subprocess_env(PYTHONPATH=str(ROOT)), capture_output=True, text=True,
        timeout=600,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2 and exactly one non-empty stderr line, ``error: ...``, naming ``fragments``."""
    assert_refused(result.returncode, result.stderr, *fragments)


def assert_refused(code: int | None, stderr: str, *fragments: str) -> None:
    """Exit code 2 and exactly one non-empty stderr line, ``error: ...``, naming ``fragments``."""
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def stage_in_process(name: str, *overrides: str, cwd: Path) -> tuple[int, str]:
    """Run stage NAME's task function in this process, in ``cwd``, on ``conf/`` composed with
    :data:`TINY` and ``overrides`` -- what ``python -m stages.NAME`` runs after Hydra's
    composition, without a process start. Returns (exit code, stderr)."""
    import contextlib
    import importlib
    import io

    cfg = compose_cfg(*overrides)
    main = importlib.import_module(f"stages.{name}").main
    stderr = io.StringIO()
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stderr(stderr):
            try:
                main(cfg)  # hydra.main passes a given config straight to the task function
                code = 0
            except SystemExit as exc:
                code = exc.code
    finally:
        os.chdir(previous)
    return code, stderr.getvalue()


def stages_run(output: str) -> set[str]:
    """The stages a ``dvc repro`` / ``dvc exp run`` output says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def copy_repo(dest: Path, *overrides: str) -> Path:
    """A clone-like copy of the project at ``dest`` (tracked and untracked-unignored files,
    without DVC's cache or data/ other than its inputs data/selections/ and
    data/corrections.csv), with ``params.yaml`` composed with ``overrides`` and everything
    committed to a fresh git repository.

    ``dest`` must be new or an empty real directory: files are never copied through whatever
    (symlinks included) someone else may have left there."""
    dest = Path(dest)
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise FileExistsError(f"copy_repo: {dest} exists and is not an empty directory")
    dest.mkdir(parents=True, exist_ok=True)
    listed = sh("git", "ls-files", "-co", "--exclude-standard", cwd=ROOT).stdout.split("\n")
    for name in filter(None, listed):
        skipped = name.startswith(("data/", ".dvc/cache", ".dvc/tmp")) \
            and not name.startswith(("data/selections/", "data/corrections.csv"))
        if skipped or not (ROOT / name).is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    compose_params(dest, *overrides)
    sh("git", "init", "-q", cwd=dest)
    sh("git", "add", "-A", cwd=dest)
    sh("git", "commit", "-q", "-m", "copy of the project", cwd=dest)
    return dest


def compose_params(repo: Path, *overrides: str) -> None:
    """``datamap compose OVERRIDES`` in ``repo`` (rewrites its params.yaml)."""
    sh(sys.executable, "-m", "datamap.cli", "compose", *overrides, cwd=repo)


# --------------------------------------------------------------------------------------------
# small dynamics tables


def make_columns(n: int = 6, epochs: int = 3, records: int = 1, k: int = 3, seed: int = 0,
                 ids: np.ndarray | None = None, gold: np.ndarray | None = None):
    """Random logits -> (columns in (epoch, record, id) order, logits [rows, k], ids).

    ``gold`` (default random) gives the examples' labels, e.g. a prepared split's."""
    from datamap.dynamics.values import per_example_values

    rng = np.random.default_rng(seed)
    ids = np.arange(10, 10 + 3 * n, 3, dtype=np.int64) if ids is None else ids
    gold = rng.integers(0, k, n) if gold is None else np.asarray(gold)
    slots = epochs * records
    logits = rng.normal(0, 2, size=(slots * n, k)).astype(np.float32)
    gold_rows = np.tile(gold, slots)
    cols = {
        "id": np.tile(ids, slots),
        "epoch": np.repeat(np.arange(epochs), records * n),
        "record": np.tile(np.repeat(np.arange(records), n), epochs),
        "gold": gold_rows,
        **per_example_values(logits, gold_rows),
    }
    return cols, logits, ids


def make_table(n: int = 6, epochs: int = 3, records: int = 1, k: int = 3, seed: int = 0,
               logits: bool = False) -> pa.Table:
    """A valid dynamics table of random logits."""
    from datamap.dynamics.schema import DynamicsMeta, build_dynamics

    cols, lg, _ = make_columns(n, epochs, records, k, seed)
    meta = DynamicsMeta(num_classes=k, records_per_epoch=records)
    return build_dynamics(cols, meta, logits=lg if logits else None)


def raw_table(cols, meta) -> pa.Table:
    """A dynamics table straight from columns, in the given row order, without validation."""
    from datamap.dynamics.schema import SCHEMA
    from datamap.io import with_metadata

    arrays = [pa.array(np.asarray(cols[c]), type=t) for c, t in SCHEMA.items()]
    return with_metadata(pa.Table.from_arrays(arrays, names=list(SCHEMA)), asdict(meta))


# --------------------------------------------------------------------------------------------
# the interactive data map


#: Synthetic data-map points (:func:`synthetic_points`): class names and the region rule.
PAGE_CLASSES = [f"class {k}" for k in range(10)]
PAGE_REGION_RULE = ("threshold rule: ambiguous if variability >= 0.2, else easy-to-learn if "
                    "confidence >= 0.5, else hard-to-learn")
_PAGE_WORDS = ("the movie film was plot acting really quite a story this and with music cast "
               "good great excellent wonderful superb bad awful terrible poor dreadful scene "
               "director script ending").split()


def synthetic_points(n: int, seed: int = 0, classes: int = len(PAGE_CLASSES)):
    """``n`` seeded points of the interactive data map (every column ``build_page`` reads, and
    ``flipped``), drawn in score space the way a real map looks: easy (high confidence, low
    variability), ambiguous (high variability) and mislabelled (low confidence; 70 % flipped).
    Regions follow :data:`PAGE_REGION_RULE`; ids are ``7 + 3 k`` shuffled, so the page must
    sort them."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    kind = rng.choice(3, size=n, p=[0.6, 0.25, 0.15])
    confidence = np.select([kind == 0, kind == 1],
                           [rng.beta(8, 1.5, n), rng.uniform(0.25, 0.75, n)], rng.beta(1.5, 8, n))
    variability = np.select([kind == 0, kind == 1],
                            [rng.uniform(0.0, 0.18, n) * (1.05 - confidence),
                             rng.uniform(0.2, 0.45, n)], rng.uniform(0.0, 0.15, n))
    correctness = np.round(np.clip(confidence + rng.normal(0, 0.1, n), 0, 1) * 10) / 10
    gold = rng.integers(0, classes, n)
    shift = rng.integers(1, classes, n)
    predicted = np.where(kind == 0, gold, np.where(kind == 2, (gold + shift) % classes,
                                                   rng.integers(0, classes, n)))
    region = np.where(variability >= 0.2, "ambiguous",
                      np.where(confidence >= 0.5, "easy-to-learn", "hard-to-learn"))
    return pd.DataFrame({
        "id": 7 + 3 * rng.permutation(n).astype(np.int64),
        "gold": gold,
        "most_predicted": predicted,
        "confidence": confidence,
        "variability": variability,
        "correctness": correctness,
        "forgetfulness": rng.poisson(np.where(kind == 1, 2.0, 0.3)),
        "region": region,
        "flipped": (kind == 2) & (rng.random(n) < 0.7),
    })


def synthetic_texts(n: int, seed: int = 0, words: int = 18) -> list[str]:
    """``n`` texts of about 100 characters (``words`` words from a small vocabulary)."""
    rng = np.random.default_rng([seed, 1])
    picks = np.array(_PAGE_WORDS)[rng.integers(0, len(_PAGE_WORDS), size=(n, words))]
    return [" ".join(row) for row in picks.tolist()]


def synthetic_images(points, seed: int = 0, size: int = 8) -> np.ndarray:
    """uint8 grey images ``[n, 1, size, size]``: a pattern per given class plus noise."""
    rng = np.random.default_rng([seed, 2])
    patterns = rng.uniform(0, 255, size=(len(PAGE_CLASSES), 1, size, size))
    gold = points["gold"].to_numpy()
    noisy = patterns[gold] + rng.normal(0, 30, size=(len(gold), 1, size, size))
    return np.clip(noisy, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# headless Chromium: Debian's package, driven by Playwright (no `playwright install`)

#: Flags that let Debian's Chromium run headless as root, offline and without a GPU.
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync")


def chromium_path() -> str | None:
    """The Chromium executable: ``$DATAMAP_CHROMIUM``, else ``chromium`` on PATH (None when
    there is none; `make browser` installs Debian's)."""
    return os.environ.get("DATAMAP_CHROMIUM") or shutil.which("chromium")


@contextlib.contextmanager
def chromium() -> Iterator:
    """A headless Playwright ``Browser`` on :func:`chromium_path` (each launch gets a fresh
    temporary profile)."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise RuntimeError("no Chromium found: run `make browser` (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


# --------------------------------------------------------------------------------------------
# small generated datasets in the formats a user brings (see docs/own-data.md)

#: Words of the generated text tasks: a class is told by its cue words among fillers.
FILLERS = ("the", "movie", "film", "was", "plot", "acting", "really", "quite", "a", "story",
           "this", "and", "with", "music", "cast")
CUES = {"positive": ("good", "great", "excellent", "wonderful", "superb"),
        "negative": ("bad", "awful", "terrible", "poor", "dreadful")}
PAIR_CUES = {"entailment": "indeed", "neutral": "maybe", "contradiction": "never"}


def sentiment_frame(n: int = 300, seed: int = 0):
    """A learnable single-text task: ``sentence`` (fillers plus cue words) and ``label``."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    labels = np.array(sorted(CUES))[np.arange(n) % 2]
    texts = []
    for label in labels:
        words = list(rng.choice(FILLERS, rng.integers(4, 9)))
        for cue in rng.choice(CUES[label], rng.integers(1, 3)):
            words.insert(int(rng.integers(0, len(words) + 1)), str(cue))
        texts.append(" ".join(words).capitalize() + ".")
    return pd.DataFrame({"sentence": texts, "label": labels})


def pairs_frame(n: int = 300, seed: int = 0, dropped: int = 12):
    """Sentence pairs in SNLI's layout (``sentence1``, ``sentence2``, ``gold_label``); the
    first ``dropped`` rows are labelled ``-`` (no consensus)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    names = sorted(PAIR_CUES)
    labels = [names[i % 3] for i in range(n)]
    premises = [" ".join(rng.choice(FILLERS, 6)) for _ in range(n)]
    hypotheses = [f"{' '.join(rng.choice(FILLERS, 3))} {PAIR_CUES[label]}" for label in labels]
    labels[:dropped] = ["-"] * dropped
    return pd.DataFrame({"pairID": np.arange(5000, 5000 + n), "sentence1": premises,
                         "sentence2": hypotheses, "gold_label": labels})


def numeric_frame(n: int = 300, seed: int = 0, features: int = 4):
    """Three overlapping Gaussian blobs: ``f0..f{features-1}`` and an integer ``y``."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    centres = rng.normal(0, 2.0, size=(3, features))
    x = centres[y] + rng.normal(0, 1.0, size=(n, features))
    return pd.DataFrame({**{f"f{j}": x[:, j] for j in range(features)}, "y": y})


def write_image_folder(root: Path, per_class: int = 40, splits=("train",), size: int = 8,
                       seed: int = 0, mode: str = "L") -> Path:
    """``root/<split>/<class>/<i>.png``: three classes of noisy bar patterns."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    patterns = {"horizontal": np.zeros((size, size)), "vertical": np.zeros((size, size)),
                "diagonal": np.eye(size)}
    patterns["horizontal"][size // 2 - 1:size // 2 + 1] = 1
    patterns["vertical"][:, size // 2 - 1:size // 2 + 1] = 1
    for split in splits:
        for name, pattern in patterns.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = np.clip(pattern + rng.normal(0, 0.35, pattern.shape), 0, 1)
                image = Image.fromarray((pixels * 255).astype(np.uint8), mode="L")
                image.convert(mode).save(folder / f"{i:03d}.png")
    return root


def write_tiny_transformer(folder: Path, hidden: int = 32, layers: int = 2, heads: int = 2,
                           intermediate: int = 64, positions: int = 64,
                           num_labels: int = 2) -> Path:
    """A random BERT (tiny by default; the other arguments size it) with a WordPiece tokenizer
    over the generated tasks' words, saved with ``save_pretrained`` (no network)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    words = sorted({*FILLERS, *(w for cues in CUES.values() for w in cues),
                    *PAIR_CUES.values(), "."})
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    # transformers 5 takes the vocabulary as `vocab` and ignores `vocab_file` (leaving a
    # tokenizer that maps every word to [UNK]); 4.x takes `vocab_file`
    import inspect

    takes = inspect.signature(BertTokenizerFast.__init__).parameters
    tokenizer = BertTokenizerFast(**{"vocab" if "vocab" in takes else "vocab_file": str(vocab)},
                                  do_lower_case=True)
    if len(tokenizer.get_vocab()) != len(words) + 5 or \
            tokenizer.convert_tokens_to_ids(words[0]) == tokenizer.unk_token_id:
        raise RuntimeError(f"the tiny tokenizer lost its vocabulary ({len(tokenizer)} tokens)")
    config = BertConfig(vocab_size=len(words) + 5, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads,
                        intermediate_size=intermediate,
                        max_position_embeddings=positions, num_labels=num_labels)
    import torch

    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

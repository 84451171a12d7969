"""The bad-input catalogue: every row of docs/bad-input.md's table, run through its stage.

Each case prepares the files it needs in a fresh directory, runs the stage's task function on
the real config (what ``python -m stages.X`` runs after Hydra's composition) and checks the
contract: exit code 2, exactly one line ``error: ...`` naming the input and the fix, no
traceback, and no artifact written. The docs table and :data:`CASES` must list the same ids.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .helpers import (
    ROOT,
    assert_refused,
    numeric_frame,
    pairs_frame,
    sentiment_frame,
    stage_in_process,
    write_image_folder,
)

TEXT = ("data=table", "data.source.text_columns=[sentence]")
SPECS = ("~selection.specs", "+selection.specs={full: {random: 1.0}}")


@dataclass
class Case:
    """One row of the catalogue: files to write, the stage and overrides, what the line says."""

    id: str
    stage: str
    overrides: tuple[str, ...]
    fragments: tuple[str, ...]
    setup: Callable[[Path], None] = lambda root: None
    #: paths (relative to the run's directory) that must not exist afterwards
    outputs: tuple[str, ...] = ("data/prepared",)
    patch_modules: dict[str, object] = field(default_factory=dict)


# ------------------------------------------------------------------------------ file writers


def write(name: str, frame: pd.DataFrame | None = None, text: str | bytes | None = None):
    def setup(root: Path) -> None:
        path = root / name
        if frame is not None:
            {".csv": partial(frame.to_csv, index=False),
             ".tsv": partial(frame.to_csv, sep="\t", index=False),
             ".jsonl": partial(frame.to_json, orient="records", lines=True),
             ".parquet": frame.to_parquet}[path.suffix](path)
        elif isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text or "")
    return setup


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        for step in setups:
            step(root)
    return setup


def sst(changes: dict[tuple[int, str], str] | None = None) -> pd.DataFrame:
    """60 generated sentences, with ``changes`` {(row, column): value} applied."""
    frame = sentiment_frame(60)
    for (row, column), value in (changes or {}).items():
        frame.loc[row, column] = value
    return frame


def prepared(kind: str = "text") -> Callable[[Path], None]:
    """Prepared data in ``data/prepared`` (text sentences, or numeric with 3 classes)."""
    def setup(root: Path) -> None:
        from datamap.data import TableSource
        from datamap.data.prepare import prepare

        if kind == "text":
            sentiment_frame(60).to_csv(root / "sst.csv", index=False)
            source = TableSource(train=str(root / "sst.csv"), text_columns=["sentence"])
        else:
            numeric_frame(60).to_csv(root / "num.csv", index=False)
            source = TableSource(train=str(root / "num.csv"), label_column="y")
        prepare(source.load(), root / "data" / "prepared", val=0.2, test=0.2, label_noise=0.0,
                seed=0)
    return setup


def images(**kwargs) -> Callable[[Path], None]:
    return lambda root: write_image_folder(root / "imgs", per_class=4, **kwargs)


def image_problem(kind: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        from PIL import Image

        write_image_folder(root / "imgs", per_class=4)
        target = root / "imgs" / "train" / "vertical" / "001.png"
        if kind == "unreadable":
            target.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
        elif kind == "size":
            Image.new("L", (9, 8)).save(target)
        elif kind == "mode":
            Image.new("RGB", (8, 8)).save(target)
        elif kind == "empty":
            for path in (root / "imgs" / "train" / "vertical").iterdir():
                path.unlink()
        elif kind == "unseen":
            write_image_folder(root / "imgs", per_class=2, splits=("test",))
            (root / "imgs" / "test" / "diagonal").rename(root / "imgs" / "test" / "circle")
        elif kind == "16-bit":
            Image.fromarray(np.full((8, 8), 1000, dtype=np.uint16)).save(target)
        elif kind == "bomb":
            target.write_bytes(png_header_only(20_000, 20_000))
        elif kind == "same-class":
            (root / "imgs" / "train" / "vertical").rename(root / "imgs" / "train" / "1")
            (root / "imgs" / "train" / "diagonal").rename(root / "imgs" / "train" / "01")
        elif kind == "loose":
            (root / "imgs" / "train" / "stray.png").write_bytes(target.read_bytes())
        elif kind == "mixed-kinds":
            (root / "imgs" / "train" / "vertical").rename(root / "imgs" / "train" / "0")
            (root / "imgs" / "train" / "diagonal").rename(root / "imgs" / "train" / "1")
    return setup


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))
            + chunk(b"IEND", b""))


def float32_labels(root: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = numeric_frame(60)
    pq.write_table(pa.table({**{c: frame[c].to_numpy() for c in ("f0", "f1")},
                             "y": pa.array(np.where(frame["y"] == 2, 2.0**24, frame["y"]),
                                           pa.float32())}), root / "num.parquet")


def stale_dynamics(root: Path) -> None:
    from datamap.io import write_parquet

    from .helpers import make_table

    prepared("numeric")(root)
    write_parquet(root / "data" / "train" / "dynamics.parquet", make_table(n=6, k=3))


def dynamics_with_nan(root: Path) -> None:
    """Dynamics of the prepared train split whose p_gold holds one NaN."""
    from datamap.data.splits import read_split
    from datamap.dynamics.schema import DynamicsMeta
    from datamap.io import write_parquet

    from .helpers import make_columns, raw_table

    prepared("numeric")(root)
    train = read_split(root / "data" / "prepared", "train")
    cols, _, _ = make_columns(len(train.ids), k=3, ids=np.asarray(train.ids),
                              gold=np.asarray(train.labels))
    cols["p_gold"] = np.array(cols["p_gold"], dtype=np.float32)
    cols["p_gold"][4] = np.nan
    write_parquet(root / "data" / "train" / "dynamics.parquet",
                  raw_table(cols, DynamicsMeta(num_classes=3, records_per_epoch=1)))


def dynamics_of_prepared(pred_type: str = "int32") -> Callable[[Path], None]:
    """Prepared numbers and dynamics of their train split (``pred`` stored as ``pred_type``)."""
    def setup(root: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from datamap.data.splits import read_split
        from datamap.dynamics.schema import DynamicsMeta, build_dynamics
        from datamap.io import write_parquet

        from .helpers import make_columns

        prepared("numeric")(root)
        train = read_split(root / "data" / "prepared", "train")
        cols, _, _ = make_columns(len(train.ids), k=3, ids=np.asarray(train.ids),
                                  gold=np.asarray(train.labels))
        table = build_dynamics(cols, DynamicsMeta(num_classes=3))
        path = root / "data" / "train" / "dynamics.parquet"
        if pred_type == "int32":
            write_parquet(path, table)
        else:
            index = table.schema.get_field_index("pred")
            path.parent.mkdir(parents=True, exist_ok=True)
            field = table.schema.field("pred")
            pq.write_table(table.set_column(index, field.with_type(pa.type_for_alias(pred_type)),
                                            table.column("pred").cast(pred_type)), path)
    return setup


def planted_checkpoint(kind: str) -> Callable[[Path], None]:
    """A retrained model.ckpt that would run code: a pickled object (``pickle``), or a
    description of a part that is no trusted class (``target``)."""
    def setup(root: Path) -> None:
        import torch

        checkpoint_of_two_classes(root)
        path = root / "data" / "retrain" / "full" / "seed_0" / "model.ckpt"
        state = torch.load(path, weights_only=True)
        described = state["hyper_parameters"]
        if kind == "pickle":
            described["net"] = Planted(root / "ran")
        else:
            described["net"] = {**described["net"], "_target_": "os.system"}
        torch.save(state, path)
    return setup


class Planted:
    """Unpickled, it would create a file (the stage must never unpickle it)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def checkpoint_of_two_classes(root: Path) -> None:
    from functools import partial as bind

    import torch

    from datamap.models import MLP, Classifier
    from datamap.training.fit import save_model

    prepared("numeric")(root)  # three classes
    model = Classifier(net=bind(MLP, hidden=[8]), optimizer=bind(torch.optim.AdamW),
                       input_shape=(4,), num_classes=2, input_kind="tabular")
    (root / "data" / "retrain" / "full" / "seed_0").mkdir(parents=True)
    save_model(model, root / "data" / "retrain" / "full" / "seed_0" / "model.ckpt")


# ------------------------------------------------------------------------------ the catalogue

TABLE_CASES = [
    Case("missing-file", "prepare", (*TEXT, "data.source.train=nope.csv"),
         ("nope.csv (data.source.train): file not found", "set data.source.train")),
    Case("unset-train-file", "prepare", ("data=table",),
         ("data.source.train is not set", "data.source.train=...")),
    Case("corrupt-file", "prepare", (*TEXT, "data.source.train=broken.parquet"),
         ("broken.parquet (data.source.train): cannot be read as Parquet",),
         write("broken.parquet", text=b"PAR1 this is not parquet")),
    Case("unreadable-jsonl", "prepare", (*TEXT, "data.source.train=bad.jsonl"),
         ("bad.jsonl (data.source.train): cannot be read as JSON lines",),
         write("bad.jsonl", text='{"sentence": "fine", "label": "a"}\n{"sentence": oops}\n')),
    Case("empty-file", "prepare", (*TEXT, "data.source.train=empty.csv"),
         ("empty.csv (data.source.train): the file is empty",), write("empty.csv", text="")),
    Case("header-only", "prepare", (*TEXT, "data.source.train=head.csv"),
         ("head.csv (data.source.train): no rows",), write("head.csv", text="sentence,label\n")),
    Case("unknown-extension", "prepare", (*TEXT, "data.source.train=data.xlsx"),
         ("unknown file type '.xlsx'", ".csv, .tsv, .jsonl, .parquet"),
         write("data.xlsx", text="x")),
    Case("missing-text-column", "prepare",
         ("data=table", "data.source.train=sst.csv", "data.source.text_columns=[review]"),
         ("sst.csv: no text column(s) 'review'", "set data.source.text_columns"),
         write("sst.csv", sst())),
    Case("missing-feature-column", "prepare",
         ("data=table", "data.source.train=num.csv", "data.source.label_column=y",
          "data.source.feature_columns=[f0,f9]"),
         ("num.csv: no feature column(s) 'f9'", "set data.source.feature_columns"),
         write("num.csv", numeric_frame(40))),
    Case("missing-label-column", "prepare",
         (*TEXT, "data.source.train=sst.csv", "data.source.label_column=sentiment"),
         ("sst.csv: no label column 'sentiment'", "set data.source.label_column"),
         write("sst.csv", sst())),
    Case("missing-labels", "prepare", (*TEXT, "data.source.train=sst.csv"),
         ("sst.csv: 2 row(s) have no label in column 'label' (first at line 5)",
          "data.source.drop_labels"),
         write("sst.csv", sst({(3, "label"): "", (9, "label"): ""}))),
    Case("empty-texts", "prepare", (*TEXT, "data.source.train=sst.jsonl"),
         ("sst.jsonl: 1 row(s) have an empty text in column 'sentence' (first at line 8)",),
         write("sst.jsonl", sst({(7, "sentence"): "   "}))),
    Case("unnamed-csv-column", "prepare",
         ("data=table", "data.source.train=num.csv", "data.source.label_column=y"),
         ("num.csv: column 1 has no name in the header (pandas calls it 'Unnamed: 0'",
          "list the features in data.source.feature_columns"),
         lambda root: numeric_frame(40).to_csv(root / "num.csv")),
    Case("non-numeric-features", "prepare",
         ("data=table", "data.source.train=num.csv", "data.source.label_column=y"),
         ("num.csv: feature column 'f2' has 1 non-numeric", "'n/a' at line 4"),
         write("num.csv", numeric_frame(40).astype({"f2": object}).assign(
             f2=lambda f: f["f2"].where(f.index != 2, "n/a")))),
    Case("text-without-text-columns", "prepare",
         ("data=table", "data.source.train=sst.csv"),
         ("feature column 'sentence'", "set data.source.text_columns instead"),
         write("sst.csv", sst())),
    Case("duplicate-ids", "prepare",
         (*TEXT, "data.source.train=sst.csv", "data.source.id_column=uid"),
         ("sst.csv: id 7 occurs 2 times in column 'uid'", "every example needs its own id"),
         write("sst.csv", sst().assign(uid=lambda f: np.where(f.index == 8, 7, f.index)))),
    Case("non-integer-ids", "prepare",
         ("data=table", "data.source.train=snli.jsonl", "data.source.label_column=gold_label",
          "data.source.text_columns=[sentence1,sentence2]", "data.source.id_column=pair"),
         ("snli.jsonl: id column 'pair' must hold integers", "at line 1"),
         write("snli.jsonl", pairs_frame(30).assign(pair=lambda f: "p" + f.index.astype(str)))),
    Case("unseen-test-label", "prepare",
         (*TEXT, "data.source.train=sst.csv", "data.source.test=test.csv"),
         ("test.csv: label(s) 'neutral' never occur in",),
         both(write("sst.csv", sst()), write("test.csv", sst({(0, "label"): "neutral"})))),
    Case("unseen-control-label", "prepare",
         (*TEXT, "data.source.train=sst.csv", "data.source.control={hard: hard.tsv}"),
         ("hard.tsv: label(s) 'mixed' never occur in",),
         both(write("sst.csv", sst()), write("hard.tsv", sst({(1, "label"): "mixed"})))),
    Case("label-not-in-classes", "prepare",
         (*TEXT, "data.source.train=sst.csv", "data.source.classes=[positive,neutral]"),
         ("sst.csv: label(s) 'negative' not in data.source.classes",),
         write("sst.csv", sst())),
    Case("single-class", "prepare", (*TEXT, "data.source.train=sst.csv"),
         ("every training example has the label 'positive'", "at least two classes"),
         write("sst.csv", sst().assign(label="positive"))),
    Case("all-rows-dropped", "prepare",
         (*TEXT, "data.source.train=sst.csv", "data.source.drop_labels=[positive,negative]"),
         ("sst.csv: every row's label is in data.source.drop_labels",),
         write("sst.csv", sst())),
    Case("three-text-columns", "prepare",
         (*TEXT, "data.source.train=sst.csv", "data.source.text_columns=[a,b,c]"),
         ("data.source.text_columns must name one text column, or two",),
         write("sst.csv", sst())),
    Case("text-and-feature-columns", "prepare",
         (*TEXT, "data.source.train=sst.csv", "data.source.feature_columns=[x]"),
         ("set data.source.text_columns or data.source.feature_columns, not both",),
         write("sst.csv", sst())),
    Case("mixed-label-kinds", "prepare", (*TEXT, "data.source.train=sst.csv"),
         ("sst.csv", "labels mix numbers"),
         write("sst.csv", sst().assign(label=["0", "1"] * 29 + ["1", "unknown"]))),
    Case("input-is-label", "prepare",
         ("data=table", "data.source.train=sst.csv", "data.source.text_columns=[label]"),
         ("'label' is both data.source.label_column",), write("sst.csv", sst())),
    Case("id-as-feature", "prepare",
         ("data=table", "data.source.train=num.csv", "data.source.label_column=y",
          "data.source.feature_columns=[f0,uid]", "data.source.id_column=uid"),
         ("'uid' is both",),
         write("num.csv", numeric_frame(60).assign(uid=lambda f: f.index))),
    Case("text-cell-not-text", "prepare", (*TEXT, "data.source.train=t.jsonl"),
         ("text column 'sentence' holds 60 value",),
         write("t.jsonl", sst().assign(sentence=[0.5] * 60))),
    Case("too-small-to-split", "prepare", (*TEXT, "data.source.train=sst.csv"),
         ("cannot split 6 examples stratified", "give the split as its own file"),
         write("sst.csv", sentiment_frame(6))),
    Case("feature-column-missing-in-test", "prepare",
         ("data=table", "data.source.train=num.csv", "data.source.test=test.csv",
          "data.source.label_column=y"),
         ("test.csv: no feature column(s) 'f3' of the training file num.csv",
          "matched by name"),
         both(write("num.csv", numeric_frame(60)),
              write("test.csv", numeric_frame(30).drop(columns="f3")))),
    Case("duplicate-header", "prepare", (*TEXT, "data.source.train=sst.csv"),
         ("sst.csv (data.source.train): column 'label' occurs 2 times in the header",
          "rename or remove the repeated column"),
         write("sst.csv", sst().assign(again=lambda f: f["label"]).rename(
             columns={"again": "label"}))),
    Case("float32-label-beyond-exact", "prepare",
         ("data=table", "data.source.train=num.parquet", "data.source.label_column=y"),
         ("num.parquet: label column 'y' at row 2", "is a float at or beyond 1.68e+07",
          "store it as an integer or as text"), float32_labels),
    Case("feature-beyond-float32", "prepare",
         ("data=table", "data.source.train=num.csv", "data.source.label_column=y"),
         ("num.csv: feature column 'f1' has 1 non-numeric", "'1e39' at line 5", "float32"),
         write("num.csv", numeric_frame(40).astype({"f1": object}).assign(
             f1=lambda f: f["f1"].where(f.index != 3, "1e39")))),
    Case("label-with-line-separator", "prepare", (*TEXT, "data.source.train=sst.csv"),
         ("sst.csv: label column 'label' at line 3", "holds a control character or line break"),
         write("sst.csv", sst({(1, "label"): "positive\u2028x"}))),
]

IMAGE = ("data=image_folder", "data.source.root=imgs")
IMAGE_CASES = [
    Case("image-folder-not-found", "prepare", IMAGE,
         ("imgs: image folder not found", "set data.source.root")),
    Case("no-train-folder", "prepare", IMAGE, ("imgs: no train/ folder",),
         images(splits=("test",))),
    Case("image-outside-class-folder", "prepare", IMAGE,
         ("imgs/train: 1 image(s) directly in it (first 'stray.png') have no class",),
         image_problem("loose")),
    Case("class-folder-without-images", "prepare", IMAGE,
         ("train/vertical: no images (.png, .jpg, .jpeg)",), image_problem("empty")),
    Case("unreadable-image", "prepare", IMAGE,
         ("train/vertical/001.png: unreadable image", "replace or remove the file"),
         image_problem("unreadable")),
    Case("mixed-image-sizes", "prepare", (*IMAGE, "data.source.mode=L"),
         ("image size 9x8 differs from 8x8", "set data.source.size=[height,width]"),
         image_problem("size")),
    Case("mixed-image-modes", "prepare", (*IMAGE, "data.source.mode=null"),
         ("image mode RGB differs from L", "set data.source.mode to L or RGB"),
         image_problem("mode")),
    Case("unseen-class-folder", "prepare", IMAGE,
         ("test: class folder(s) ['circle'] never occur in",), image_problem("unseen")),
    Case("bad-image-size", "prepare", (*IMAGE, "data.source.size=[8,0]"),
         ("data.source.size must be a positive int or [height, width]",), images()),
    Case("image-size-boolean", "prepare", (*IMAGE, "data.source.size=true"),
         ("data.source.size must be a positive int or [height, width], got True",), images()),
    Case("image-size-float", "prepare", (*IMAGE, "data.source.size=28.0"),
         ("data.source.size must be a positive int or [height, width], got 28.0",), images()),
    Case("sixteen-bit-image", "prepare", (*IMAGE, "data.source.mode=L"),
         ("train/vertical/001.png: image mode I;16 has 16-bit samples",
          "convert the images to 8 bits"), image_problem("16-bit")),
    Case("decompression-bomb", "prepare", IMAGE,
         ("train/vertical/001.png: unreadable image", "decompression bomb",
          "replace or remove the file"), image_problem("bomb")),
    Case("class-folders-of-one-class", "prepare", IMAGE,
         ("class folders '01', '1' are all the class '1'", "rename them apart"),
         image_problem("same-class")),
    Case("class-folders-mix-kinds", "prepare", IMAGE,
         ("train: class folders: labels mix numbers ('0', '1') and text ('horizontal')",
          "rename the stray folders"), image_problem("mixed-kinds")),
    Case("image-classes-bare-value", "prepare", (*IMAGE, "data.source.classes=7"),
         ("class folder(s) ['diagonal', 'horizontal', 'vertical'] are not in "
          "data.source.classes ['7']",), images()),
]

CONFIG_CASES = [
    Case("bad-control-name", "prepare",
         (*TEXT, "data.source.train=sst.csv", "data.source.control={test.v2: sst.csv}"),
         ("control set name 'test.v2'", "letters, digits, _ and -"), write("sst.csv", sst())),
    Case("label-noise-out-of-range", "prepare", ("data.label_noise=1.5",),
         ("data.label_noise must be in [0, 1)",)),
    Case("seed-not-an-integer", "prepare", ("seed=1.5",),
         ("seed must be an integer in [0, 2**32)", "got 1.5")),
    Case("seed-negative", "train", ("seed=-1",),
         ("seed must be an integer in [0, 2**32)", "got -1"), prepared("numeric"),
         outputs=("data/train",)),
    Case("train-records-per-epoch-train-pass", "train", ("dynamics.records_per_epoch=2",),
         ("dynamics.records_per_epoch=2 needs dynamics=eval_pass",), prepared("numeric"),
         outputs=("data/train",)),
    Case("max-epochs-forever", "train", ("trainer.max_epochs=-1",),
         ("trainer.max_epochs must be a positive number", "set e.g. trainer.max_epochs=20"),
         outputs=("data/train",)),
    Case("max-epochs-unset", "train", ("trainer.max_epochs=null",),
         ("trainer.max_epochs must be a positive number", "got None"), outputs=("data/train",)),
    Case("cnn-on-text", "train", ("model=cnn",),
         ("SmallCNN reads image inputs, but the prepared data is text",
          "use model=text_bow or model=hf"), prepared(), outputs=("data/train",)),
    Case("mlp-on-text", "train", ("model=mlp",),
         ("MLP reads image or tabular inputs, but the prepared data is text",),
         prepared(), outputs=("data/train",)),
    Case("text-model-on-numbers", "train", ("model=text_bow",),
         ("TextBagOfNgrams reads text inputs, but the prepared data is tabular",
          "use model=mlp"), prepared("numeric"), outputs=("data/train",)),
    Case("sparse-gradients-with-adamw", "train",
         ("model=text_bow", "model.optimizer._target_=torch.optim.AdamW"),
         ("AdamW cannot take the sparse embedding gradients", "model.net.sparse=false"),
         prepared(), outputs=("data/train",)),
    Case("hf-without-extra", "train", ("model=hf",),
         ("model=hf needs the optional dependency transformers", "pip install 'datamap[hf]'"),
         prepared(), outputs=("data/train",), patch_modules={"transformers": None}),
    Case("hf-no-such-directory", "train", ("model=hf", "model.net.pretrained=./no_model"),
         ("model.net.pretrained='./no_model': no such directory",),
         prepared(), outputs=("data/train",)),
    Case("hf-directory-without-model", "train", ("model=hf", "model.net.pretrained=empty"),
         ("model.net.pretrained='empty': no model in this directory (no config.json)",),
         both(prepared(), lambda root: (root / "empty").mkdir()), outputs=("data/train",)),
    Case("stale-dynamics", "cartography", (),
         ("recorded ids do not match the prepared train split", "rerun the train stage"),
         stale_dynamics, outputs=("data/cartography",)),
    Case("dynamics-not-probabilities", "cartography", (),
         ("column 'p_gold' holds 1 value(s) outside [0, 1] or not a number", "nan for id",
          "rerun the train stage"), dynamics_with_nan, outputs=("data/cartography",)),
    Case("dynamics-wrong-type", "cartography", (),
         ("dynamics.parquet: column 'pred' is float64, expected int32",),
         dynamics_of_prepared("float64"), outputs=("data/cartography",)),
    Case("cartography-flag-not-boolean", "cartography", ("cartography.include_ci='false'",),
         ("cartography.include_ci must be true or false, got 'false'",),
         dynamics_of_prepared(), outputs=("data/cartography",)),
    Case("ids-file-not-unique", "cartography",
         ("+selection.specs.mine.ids_file=data/selections/mine.csv",),
         ("mine.csv: id 1 is listed 2 times", "list each id once"),
         both(dynamics_of_prepared(), lambda root: (root / "data" / "selections").mkdir(),
              write("data/selections/mine.csv", text="id\n1\n1\n")),
         outputs=("data/cartography",)),
    Case("planted-checkpoint", "evaluate", (*SPECS, "+spec=full"),
         ("model.ckpt: holds Python objects, not only tensors and plain values",
          "does not unpickle them", "retrain it"),
         planted_checkpoint("pickle"), outputs=("data/eval", "ran")),
    Case("checkpoint-of-untrusted-class", "evaluate", (*SPECS, "+spec=full"),
         ("its model.net is os.system, which is neither datamap's nor torch's",),
         planted_checkpoint("target"), outputs=("data/eval",)),
    Case("checkpoint-of-other-classes", "evaluate", (*SPECS, "+spec=full"),
         ("the model has 2 classes but the prepared data has 3", "retrain it"),
         checkpoint_of_two_classes, outputs=("data/eval",)),
    Case("selection-fractions-over-one", "select",
         ("+selection.specs.bad={ambiguous: 0.7, random: 0.4}", "+spec=bad"),
         ("selection.specs.bad", "sum to 1.1 > 1"), outputs=("data/subsets/bad",)),
    Case("selection-negative-fraction", "select",
         ("+selection.specs.bad={ambiguous: -0.1}", "+spec=bad"),
         ("selection.specs.bad.ambiguous", "[0, 1]"), outputs=("data/subsets/bad",)),
    Case("selection-unknown-baseline", "select", ("selection.baseline=nope",),
         ("selection.baseline='nope' is not a selection spec", "or null for no baseline"),
         outputs=("data/subsets",)),
    Case("selection-misspelt-key", "select", ("+selection.retrain_seed=[0]",),
         ("selection.retrain_seed: unknown key", "retrain_seeds"), outputs=("data/subsets",)),
    Case("selection-seeds-not-integers", "select", ("selection.retrain_seeds=[0,1.5]",),
         ("selection.retrain_seeds must be a list of distinct integer seeds",),
         outputs=("data/subsets",)),
    Case("selection-flag-not-boolean", "select", ("selection.stratify=no",),
         ("selection.stratify must be true or false, got 'no'",), outputs=("data/subsets",)),
    Case("selection-fraction-not-a-number", "select",
         ("+selection.specs.bad={random: abc}", "+spec=bad"),
         ("selection.specs.bad.random must be a fraction in [0, 1], got 'abc'",),
         outputs=("data/subsets/bad",)),
    Case("selection-unknown-criterion", "select",
         ("+selection.specs.bad={ambigous: 0.3}", "+spec=bad"),
         ("selection.specs.bad.ambigous", "unknown criterion"), outputs=("data/subsets/bad",)),
]

CASES = TABLE_CASES + IMAGE_CASES + CONFIG_CASES


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused_in_one_line(case, tmp_path, monkeypatch):
    case.setup(tmp_path)
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    for name, module in case.patch_modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    code, stderr = stage_in_process(case.stage, *case.overrides, cwd=tmp_path)
    assert_refused(code, stderr, *case.fragments)
    for output in case.outputs:
        assert not (tmp_path / output).exists(), output
    assert {p for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing written


def test_docs_list_every_case():
    page = (ROOT / "docs" / "bad-input.md").read_text(encoding="utf-8")
    section = page.split("## The catalogue", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([a-z0-9-]+)` \|", section, flags=re.MULTILINE)
    ids = [case.id for case in CASES] + ["unknown-option", "full-disk"]
    assert sorted(listed) == sorted(ids)
    assert len(listed) == len(set(listed)) >= 20

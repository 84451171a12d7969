"""Reviewers' decisions: the corrections file, its refusals, prepare applying it, the review
queue and summary that follow it, and the Label Studio round trip."""

from __future__ import annotations

import base64
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from datamap.cartography.review import KEEP_DISPUTED, review_queue
from datamap.cli import main as cli_main
from datamap.data import DigitsSource, TableSource, read_meta, read_split
from datamap.data.corrections import (
    Corrections,
    Decision,
    format_corrections,
    merge_decisions,
    parse_corrections,
    read_applied_corrections,
    read_corrections,
)
from datamap.data.labelstudio import (
    decisions_from_export,
    export_labelstudio,
    labeling_config,
    read_queue,
)
from datamap.data.prepare import prepare
from datamap.errors import DataError
from datamap.io import schema_metadata

from .helpers import ROOT, assert_refused, pairs_frame, sentiment_frame, stage_in_process

TEXT = ("data=table", "data.source.text_columns=[sentence]", "data.source.train=sst.csv",
        "data.corrections=corr.csv")


def parse(text: str) -> Corrections:
    return parse_corrections(text, "corr.csv")


# ------------------------------------------------------------------------------ the file


def test_the_repository_ships_a_header_only_corrections_file_wired_into_the_pipeline():
    assert (ROOT / "data" / "corrections.csv").read_text() == "id,action,label,note,reviewer\n"
    assert len(read_corrections(ROOT / "data" / "corrections.csv")) == 0
    from datamap.pipeline.config import compose

    for data in ("digits", "digits_rotated", "table", "image_folder"):
        cfg = compose(ROOT / "conf", overrides=[f"data={data}"])
        assert cfg.data.corrections == "data/corrections.csv", data
    assert yaml.safe_load((ROOT / "params.yaml").read_text())["data"]["corrections"] == \
        "data/corrections.csv"
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert "data/corrections.csv" in stages["prepare"]["deps"]
    assert "data.corrections" in stages["prepare"]["params"]
    assert "data/prepared/corrections.parquet" in stages["cartography"]["deps"]
    # a change of the file reruns prepare and what follows, nothing else directly
    assert not any("data/corrections.csv" in stage.get("do", stage).get("deps", [])
                   for name, stage in stages.items() if name != "prepare")


def test_the_format_optional_columns_quoting_bom_crlf_and_blank_lines():
    text = ("\ufeffaction,id,note\r\n"
            "drop,17,\"a note, with a comma\r\nand a line break, \"\"quoted\"\"\"\r\n"
            "\r\n"
            "keep,-3,\r\n"
            "keep,007,\r\n")
    found = parse(text)
    assert found.crlf
    assert [(d.id, d.action, d.label) for d in found.decisions] == [
        (17, "drop", ""), (-3, "keep", ""), (7, "keep", "")]
    assert found.decisions[0].note == 'a note, with a comma\r\nand a line break, "quoted"'
    assert [d.line for d in found.decisions] == [2, 5, 6]
    assert len(parse("id,action,label\n")) == 0 and not parse("id,action,label\n").crlf


def test_written_files_read_back_exactly():
    decisions = [Decision(5, "relabel", "<b>positive</b>", 'says "no", twice\nreally',
                          "ana@example.org"),
                 Decision(9, "drop", "", "", ""), Decision(2, "keep", "", "ok", "bo")]
    for crlf in (False, True):
        text = format_corrections(decisions, crlf=crlf)
        assert text.startswith("id,action,label,note,reviewer" + ("\r\n" if crlf else "\n"))
        again = parse(text)
        assert list(again.decisions) == decisions and again.crlf == crlf


def test_a_new_decision_replaces_the_old_one_in_place():
    old = [Decision(1, "keep"), Decision(2, "drop"), Decision(3, "keep")]
    new = [Decision(9, "drop"), Decision(2, "relabel", "x"), Decision(4, "keep")]
    merged, replaced = merge_decisions(old, new)
    assert merged == [Decision(1, "keep"), Decision(2, "relabel", "x"), Decision(3, "keep"),
                      Decision(9, "drop"), Decision(4, "keep")]
    assert replaced == 1


# ------------------------------------------------------------------------------ refusals


def sst(root: Path) -> None:
    sentiment_frame(60).to_csv(root / "sst.csv", index=False)


REFUSALS = [
    # (case id, corrections file: text, bytes or None for no file, extra overrides, fragments)
    ("corrections-file-missing", None, (),
     ("corr.csv (data.corrections): file not found", "data.corrections=null")),
    ("corrections-empty-file", "", (), ("corr.csv (data.corrections): the file is empty",
                                        "header id,action,label")),
    ("corrections-not-utf8", b"id,action,label,note\n3,keep,,caf\xe9\n", (),
     ("corr.csv (data.corrections): not UTF-8", "save it as UTF-8")),
    ("corrections-bad-csv", 'id,action,label,note\n3,keep,,"unterminated\n', (),
     ("corr.csv (data.corrections) line 2: not valid CSV", "RFC 4180")),
    ("corrections-missing-id-column", "action,label\ndrop,\n", (),
     ("no 'id' column (header: action,label)",)),
    ("corrections-missing-action-column", "id,label\n3,positive\n", (),
     ("no 'action' column (header: id,label)",)),
    ("corrections-unknown-column", "id,action,lable\n3,relabel,positive\n", (),
     ("unknown column 'lable' in the header", "id, action, label, note, reviewer")),
    ("corrections-repeated-column", "id,action,id\n3,drop,3\n", (),
     ("column 'id' appears twice in the header",)),
    ("corrections-cell-count", "id,action,label\n3,relabel,positive,negative\n", (),
     ("line 2: 4 cell(s), the header has 3", "quote cells that hold commas")),
    ("corrections-non-integer-id", "id,action,label\n3.0,drop,\n", (),
     ("line 2: id '3.0' is not an integer",)),
    ("corrections-unknown-action", "id,action,label\n3,Relabel,positive\n", (),
     ("line 2: unknown action 'Relabel' for id 3", "relabel, drop, keep")),
    ("corrections-relabel-without-label", "id,action,label\n3,relabel,\n", (),
     ("line 2: relabel of id 3 has no label", "give the new class name")),
    ("corrections-label-on-drop", "id,action,label\n3,drop,positive\n", (),
     ("line 2: drop of id 3 has a label ('positive')", "leave the label empty")),
    ("corrections-label-on-keep", "id,action,label\n3,keep,negative\n", (),
     ("line 2: keep of id 3 has a label ('negative')",)),
    ("corrections-repeated-row", "id,action,label\n3,drop,\n4,keep,\n3,drop,\n", (),
     ("lines 2 and 4: id 3 is decided twice", "one row per id")),
    ("corrections-conflicting-rows", "id,action,label\n3,relabel,positive\n3,drop,\n", (),
     ("lines 2 and 3: conflicting decisions for id 3 (relabel to 'positive', drop)",)),
    ("corrections-unknown-id", "id,action,label\n999,drop,\n", (),
     ("line 2: id 999 is in no split", "fix the id or remove the row")),
    ("corrections-unknown-label", "id,action,label\n3,relabel,<b>positive</b>\n", (),
     ("line 2: relabel of id 3 to '<b>positive</b>', which is not a class name",
      "'negative', 'positive'")),
    ("corrections-label-with-control-character", "id,action,label\n3,relabel,posi\tive\n",
     (), ("relabel of id 3 to 'posi\\tive': the label holds a control character",)),
    ("corrections-ambiguous-id", "id,action,label\n0,drop,\n", ("data.source.test=sst.csv",),
     ("line 2: id 0 is in the", "test splits", "id_column with ids unique across the files")),
    ("corrections-drop-everything",
     "id,action\n" + "".join(f"{i},drop\n" for i in range(60)), (),
     ("drops every training example",)),
    ("corrections-class-left-empty",
     "id,action\n" + "".join(f"{i},drop\n" for i in range(0, 60, 2)), (),
     ("leave no training example of class 'negative'", "keep some of its examples")),
    ("corrections-not-a-path", "id,action,label\n", ("data.corrections=5",),
     ("data.corrections must be a file path or null, got 5",)),
]


@pytest.mark.parametrize("case", REFUSALS, ids=[case[0] for case in REFUSALS])
def test_bad_corrections_are_refused_in_one_line(case, tmp_path):
    _, content, overrides, fragments = case
    sst(tmp_path)
    if isinstance(content, bytes):
        (tmp_path / "corr.csv").write_bytes(content)
    elif content is not None:
        (tmp_path / "corr.csv").write_text(content, encoding="utf-8", newline="")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, stderr = stage_in_process("prepare", *TEXT, *overrides, cwd=tmp_path)
    assert_refused(code, stderr, *fragments)
    assert not (tmp_path / "data").exists()
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


# ------------------------------------------------------------------------------ prepare


def digits(out: Path, corrections: Corrections | None = None) -> dict:
    return prepare(DigitsSource().load(), out, val=0.15, test=0.2, label_noise=0.1, seed=42,
                   corrections=corrections)


@pytest.fixture(scope="module")
def plain_digits(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plain") / "prepared"
    digits(out)
    return out


def test_corrections_apply_after_the_noise_to_whichever_split_holds_the_id(plain_digits,
                                                                           tmp_path):
    meta = read_meta(plain_digits)
    names = meta["class_names"]
    train = pd.read_parquet(plain_digits / "train.parquet")
    flipped = train[train["label"] != train["clean_label"]]
    correct = train[train["label"] == train["clean_label"]]
    val = read_split(plain_digits, "val")
    test = read_split(plain_digits, "test")
    fixes = flipped.head(6)
    decisions = [Decision(int(r.id), "relabel", names[int(r.clean_label)], "restored", "tests")
                 for r in fixes.itertuples()]
    decisions += [Decision(int(flipped.iloc[6].id), "drop"),
                  Decision(int(correct.iloc[0].id), "keep", note="fine"),
                  Decision(int(val.ids[0]), "relabel", names[(int(val.labels[0]) + 1) % 10]),
                  Decision(int(test.ids[0]), "drop")]
    corrected_meta = digits(tmp_path / "prepared", Corrections(tuple(decisions), "corr.csv"))

    assert corrected_meta["corrections"] == {"train": {"relabel": 6, "drop": 1, "keep": 1},
                                             "val": {"relabel": 1, "drop": 0, "keep": 0}}
    # the same labels are flipped as without corrections (noise comes first) ...
    assert corrected_meta["flipped"] == meta["flipped"]
    after = pd.read_parquet(tmp_path / "prepared" / "train.parquet")
    assert len(after) == len(train) - 1 and int(flipped.iloc[6].id) not in set(after["id"])
    untouched = train[~train["id"].isin([d.id for d in decisions])]
    assert untouched.reset_index(drop=True).equals(
        after[after["id"].isin(untouched["id"])].reset_index(drop=True))
    # ... and the relabelled ones are flipped no more
    assert (after["label"] != after["clean_label"]).sum() == len(flipped) - 6 - 1
    assert read_split(tmp_path / "prepared", "val").labels[0] == (val.labels[0] + 1) % 10
    assert len(read_split(tmp_path / "prepared", "test")) == len(test) - 1
    # meta.json (a dependency of training) never counts the test split; its own file does
    assert schema_metadata(pq.read_table(tmp_path / "prepared" / "test.parquet"))[
        "corrections"] == {"test": {"relabel": 0, "drop": 1, "keep": 0}}

    applied = read_applied_corrections(tmp_path / "prepared")
    assert list(applied.columns) == ["id", "split", "action", "label_before", "label_after",
                                     "note", "reviewer"]
    assert applied["id"].is_monotonic_increasing and len(applied) == len(decisions)
    row = applied.set_index("id").loc[int(fixes.iloc[0].id)]
    assert (row["split"], row["action"], row["note"], row["reviewer"]) == (
        "train", "relabel", "restored", "tests")
    assert row["label_before"] == names[int(fixes.iloc[0].label)]
    assert row["label_after"] == names[int(fixes.iloc[0].clean_label)]
    dropped = applied.set_index("id").loc[int(test.ids[0])]
    assert dropped["split"] == "test" and pd.isna(dropped["label_after"])

    # the same corrections give the same bytes
    digits(tmp_path / "again", Corrections(tuple(decisions), "corr.csv"))
    for name in ("train.parquet", "val.parquet", "test.parquet", "meta.json",
                 "corrections.parquet"):
        assert (tmp_path / "again" / name).read_bytes() == \
            (tmp_path / "prepared" / name).read_bytes(), name


def test_no_decisions_change_no_byte_of_the_training_data(plain_digits, tmp_path):
    digits(tmp_path / "empty", parse("id,action,label\n"))
    for name in ("train.parquet", "val.parquet", "test.parquet", "meta.json",
                 "corrections.parquet"):
        assert (tmp_path / "empty" / name).read_bytes() == (plain_digits / name).read_bytes()
    assert "corrections" not in read_meta(plain_digits)
    assert len(read_applied_corrections(plain_digits)) == 0
    # a test-only decision leaves meta.json and the training files as they are
    test_id = int(read_split(plain_digits, "test").ids[3])
    digits(tmp_path / "test_only", parse(f"id,action\n{test_id},drop\n"))
    for name in ("train.parquet", "val.parquet", "meta.json"):
        assert (tmp_path / "test_only" / name).read_bytes() == (plain_digits / name).read_bytes()


def test_read_applied_names_a_stale_prepared_directory(tmp_path):
    with pytest.raises(DataError, match="corrections.parquet: applied corrections not found; "
                                        "rerun the prepare stage"):
        read_applied_corrections(tmp_path)


# ------------------------------------------------------------------------------ the queue


def test_decided_examples_leave_the_queue_unless_the_model_disputes_a_keep():
    scores = pd.DataFrame({
        "id": [10, 11, 12, 13, 14, 15], "gold": [0, 1, 0, 1, 0, 1],
        "region": ["hard-to-learn"] * 5 + ["ambiguous"],
        "confidence": [0.01, 0.02, 0.03, 0.04, 0.05, 0.5], "variability": 0.1,
        "correctness": 0.0})
    predictions = pd.Series([1, 1, 1, 0, 0, 0], index=[10, 11, 12, 13, 14, 15])
    decided = pd.DataFrame({
        "id": [10, 11, 12, 14, 99], "split": ["train", "train", "train", "train", "test"],
        "action": ["relabel", "keep", "keep", "keep", "drop"]})
    queue = review_queue(scores, predictions, ["a", "b"], top_k=3, decided=decided)
    # 10 relabelled, 11 kept and the model agrees (b), 14 kept and the model agrees (a): out;
    # 12 kept but the model says b: stays, flagged; 13 never decided; 15 undecided too, queued
    # by its confidence whatever its region
    assert queue["id"].tolist() == [12, 13, 15]
    assert queue["rank"].tolist() == [1, 2, 3]
    assert queue["region"].tolist() == ["hard-to-learn", "hard-to-learn", "ambiguous"]
    assert queue["previously"].tolist() == ["keep", "", ""]
    assert queue["flag"].tolist() == [KEEP_DISPUTED, "", ""]
    undecided = review_queue(scores, predictions, ["a", "b"], top_k=3)
    assert undecided["id"].tolist() == [10, 11, 12]
    assert set(undecided["previously"]) == {""} and set(undecided["flag"]) == {""}


def test_cartography_counts_the_decisions_and_drops_them_from_the_queue(plain_digits,
                                                                        tmp_path):
    from datamap.cartography.run import run_cartography
    from datamap.dynamics.schema import DynamicsMeta, build_dynamics
    from datamap.dynamics.storage import write_dynamics

    from .helpers import compose_cfg, make_columns

    names = read_meta(plain_digits)["class_names"]
    train = pd.read_parquet(plain_digits / "train.parquet", columns=["id", "label",
                                                                     "clean_label"])
    flipped = train[train["label"] != train["clean_label"]]
    decisions = [Decision(int(r.id), "relabel", names[int(r.clean_label)])
                 for r in flipped.head(20).itertuples()]
    decisions.append(Decision(int(flipped.iloc[20].id), "drop"))
    prepared = tmp_path / "prepared"
    digits(prepared, Corrections(tuple(decisions), "corr.csv"))
    now = pq.read_table(prepared / "train.parquet", columns=["id", "label"])
    # dynamics where every example is hard to learn: each would be queued
    cols, _, _ = make_columns(n=now.num_rows, epochs=3, k=10, seed=1,
                              ids=now.column("id").to_numpy(), gold=now.column("label").to_numpy())
    cols["p_gold"] = np.full_like(cols["p_gold"], 0.01)
    write_dynamics(tmp_path / "dynamics.parquet", build_dynamics(cols, DynamicsMeta(10)))
    cfg = compose_cfg("cartography.review_top_k=100000")
    summary = run_cartography(tmp_path / "dynamics.parquet", prepared, tmp_path / "out",
                              cfg.cartography, seed=0)
    assert summary["corrections"] == {
        "train": {"reviewed": 21, "relabelled": 20, "dropped": 1, "kept": 0},
        "val": {"reviewed": 0, "relabelled": 0, "dropped": 0, "kept": 0}}
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["corrections"] == \
        summary["corrections"]
    assert summary["noise"]["n_flipped"] == len(flipped) - 21
    queue = pd.read_csv(tmp_path / "out" / "review" / "hard_to_learn.csv",
                        keep_default_na=False)
    assert {"previously", "flag"} <= set(queue.columns)
    assert len(queue) == now.num_rows - 20
    assert not set(queue["id"]) & {d.id for d in decisions}


# ------------------------------------------------------------------------------ Label Studio


def text_prepared(root: Path, pairs: bool = False) -> Path:
    out = root / "prepared"
    if pairs:
        pairs_frame(90, dropped=0).to_csv(root / "snli.csv", index=False)
        source = TableSource(train=str(root / "snli.csv"), label_column="gold_label",
                             text_columns=["sentence1", "sentence2"], id_column="pairID")
    else:
        sentiment_frame(60).to_csv(root / "sst.csv", index=False)
        source = TableSource(train=str(root / "sst.csv"), text_columns=["sentence"])
    prepare(source.load(), out, val=0.2, test=0.2, label_noise=0.0, seed=0)
    return out


def fake_queue(prepared: Path, path: Path, n: int = 8) -> pd.DataFrame:
    """A review queue of the first ``n`` training examples, the model 'disagreeing' with each
    (the next class)."""
    meta = read_meta(prepared)
    names = meta["class_names"]
    train = read_split(prepared, "train", meta)
    labels = train.labels[:n]
    queue = pd.DataFrame({
        "rank": np.arange(1, n + 1), "id": train.ids[:n],
        "given_label": [names[i] for i in labels],
        "model_label": [names[(i + 1) % len(names)] for i in labels],
        "confidence": np.linspace(0.01, 0.2, n).round(6), "variability": 0.05,
        "correctness": 0.0, "previously": "", "flag": ""})
    path.parent.mkdir(parents=True, exist_ok=True)
    queue.to_csv(path, index=False)
    return queue


def test_the_labeling_config_escapes_class_names_and_names_the_controls():
    meta = {"class_names": ["<b>a</b>", 'x"y', "ok & fine", "01"], "input_kind": "text",
            "input_shape": [2]}
    view = ET.fromstring(labeling_config(meta))
    choices = {c.get("name"): [x.get("value") for x in c] for c in view.iter("Choices")}
    assert choices == {"label": meta["class_names"], "drop": ["drop"]}
    texts = [t.get("value") for t in view.iter("Text")]
    assert texts == ["$text", "$text_pair"]  # both texts of a pair
    assert {c.get("toName") for c in view if c.tag in ("Choices", "TextArea")} == {"text"}
    with pytest.raises(DataError, match=r"class name '\$x' starts with '\$'"):
        labeling_config({"class_names": ["$x", "y"], "input_kind": "text", "input_shape": [1]})


def test_export_shows_both_texts_of_a_pair_and_pre_annotates_the_model_label(tmp_path):
    prepared = text_prepared(tmp_path, pairs=True)
    queue = fake_queue(prepared, tmp_path / "review" / "hard_to_learn.csv")
    count = export_labelstudio(tmp_path / "review" / "hard_to_learn.csv", prepared,
                               tmp_path / "ls" / "tasks.json", tmp_path / "ls" / "config.xml")
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    assert count == len(tasks) == len(queue)
    train = read_split(prepared, "train")
    first = tasks[0]
    assert first["data"]["id"] == int(queue["id"][0]) and first["data"]["rank"] == 1
    assert first["data"]["text"] == train.text[0] and first["data"]["text_pair"] == \
        train.text_pair[0]
    assert first["data"]["given_label"] == queue["given_label"][0]
    assert first["predictions"] == [{"model_version": "datamap", "result": [{
        "id": f"datamap-{queue['id'][0]}", "from_name": "label", "to_name": "text",
        "type": "choices", "value": {"choices": [queue["model_label"][0]]}}]}]
    view = ET.fromstring((tmp_path / "ls" / "config.xml").read_text())
    assert [t.get("name") for t in view.iter("Text")] == ["text", "text_pair"]
    # the same inputs give the same bytes
    before = (tmp_path / "ls" / "tasks.json").read_bytes()
    export_labelstudio(tmp_path / "review" / "hard_to_learn.csv", prepared,
                       tmp_path / "ls" / "tasks.json", tmp_path / "ls" / "config.xml")
    assert (tmp_path / "ls" / "tasks.json").read_bytes() == before


def test_export_embeds_images_as_png_data_uris(digits_prepared, tmp_path):
    from PIL import Image

    fake_queue(digits_prepared, tmp_path / "q.csv", n=3)
    export_labelstudio(tmp_path / "q.csv", digits_prepared, tmp_path / "t.json",
                       tmp_path / "c.xml")
    tasks = json.loads((tmp_path / "t.json").read_text())
    uri = tasks[0]["data"]["image"]
    assert uri.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert image.size == (128, 128) and image.mode == "L"  # 8x8 scaled up 16 times
    assert tasks[0]["predictions"][0]["result"][0]["to_name"] == "image"
    assert ET.fromstring((tmp_path / "c.xml").read_text()).find("Image").get("value") == \
        "$image"


def test_a_stale_queue_is_refused(tmp_path):
    prepared = text_prepared(tmp_path)
    queue = fake_queue(prepared, tmp_path / "q.csv")
    queue.assign(id=[999999] + queue["id"].tolist()[1:]).to_csv(tmp_path / "q.csv", index=False)
    with pytest.raises(DataError, match="lists id 999999, which the prepared train split does "
                                        "not hold; the queue is stale"):
        export_labelstudio(tmp_path / "q.csv", prepared, tmp_path / "t.json", tmp_path / "c.xml")
    assert not (tmp_path / "t.json").exists()


def annotation(choice: str | None, *, number: int, at: str, drop: bool = False, note: str = "",
               cancelled: bool = False, ground_truth: bool = False, by: object = 1,
               target: str = "text") -> dict:
    """An annotation as Label Studio's JSON export writes it."""
    result = []
    if choice is not None:
        result.append({"id": f"r{number}a", "type": "choices", "value": {"choices": [choice]},
                       "origin": "prediction", "to_name": target, "from_name": "label"})
    if drop:
        result.append({"id": f"r{number}b", "type": "choices", "value": {"choices": ["drop"]},
                       "origin": "manual", "to_name": target, "from_name": "drop"})
    if note:
        result.append({"id": f"r{number}c", "type": "textarea", "value": {"text": [note]},
                       "origin": "manual", "to_name": target, "from_name": "note"})
    return {"id": number, "completed_by": by, "result": result, "was_cancelled": cancelled,
            "ground_truth": ground_truth, "created_at": at, "updated_at": at,
            "draft_created_at": None, "lead_time": 4.2, "prediction": {}, "result_count": 0,
            "unique_id": f"u-{number}", "import_id": None, "last_action": None, "task": 0,
            "project": 3, "updated_by": 1, "parent_prediction": 7, "parent_annotation": None,
            "last_created_by": None}


def labelstudio_export(tasks: list[dict], annotations: dict[int, list[dict]]) -> list[dict]:
    """What Label Studio's Export > JSON gives for the imported ``tasks`` and these
    annotations (by position): the task's own id, the data as imported, its annotations,
    prediction ids and timestamps."""
    exported = []
    for number, task in enumerate(tasks):
        own = 100 + number
        notes = annotations.get(number, [])
        for a in notes:
            a["task"] = own
        exported.append({
            "id": own, "annotations": notes, "file_upload": "a1b2c3-tasks.json", "drafts": [],
            "predictions": [900 + number], "data": task["data"], "meta": {},
            "created_at": "2024-05-02T10:00:00.000000Z",
            "updated_at": "2024-05-02T11:00:00.000000Z", "inner_id": number + 1,
            "total_annotations": len(notes),
            "cancelled_annotations": sum(a["was_cancelled"] for a in notes),
            "total_predictions": 1, "comment_count": 0, "unresolved_comment_count": 0,
            "last_comment_updated_at": None, "project": 3, "updated_by": 1,
            "comment_authors": []})
    return exported


def test_labelstudio_round_trip_into_the_corrections_file_and_prepare(tmp_path):
    prepared = text_prepared(tmp_path)
    queue = fake_queue(prepared, tmp_path / "review" / "hard_to_learn.csv")
    assert cli_main(["corrections", "export-labelstudio", "--out", str(tmp_path / "tasks.json"),
                     "--queue", str(tmp_path / "review" / "hard_to_learn.csv"),
                     "--prepared", str(prepared)]) == 0
    assert (tmp_path / "labeling_config.xml").is_file()
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    ids, given, model = queue["id"].tolist(), queue["given_label"], queue["model_label"]
    t = "2024-05-02T12:%02d:00.000000Z"
    export = labelstudio_export(tasks, {
        0: [annotation(given[0], number=1, at=t % 1)],                          # keep
        1: [annotation(model[1], number=2, at=t % 2, note="clearly the other class",
                       by={"id": 4, "email": "ana@example.org", "first_name": "",
                           "last_name": ""})],                                  # relabel
        2: [annotation(model[2], number=3, at=t % 3, drop=True)],                # drop wins
        3: [annotation(model[3], number=4, at=t % 4, cancelled=True)],           # skipped
        # 4: no annotations
        5: [annotation(model[5], number=6, at=t % 5),
            annotation(given[5], number=7, at=t % 9)],                         # latest: keep
        6: [annotation(given[6], number=8, at=t % 1, ground_truth=True),
            annotation(model[6], number=9, at=t % 8)],                         # ground truth
        7: [annotation(None, number=10, at=t % 1)],                             # no choice
    })
    (tmp_path / "export.json").write_text(json.dumps(export, indent=2))
    corrections = tmp_path / "corrections.csv"
    corrections.write_text(f"id,action,label\r\n{ids[1]},drop,\r\n123456,keep,\r\n",
                           newline="")
    assert cli_main(["corrections", "import-labelstudio", str(tmp_path / "export.json"),
                     "--corrections", str(corrections), "--prepared", str(prepared)]) == 0

    merged = read_corrections(corrections)
    assert merged.crlf  # the file's line ends are kept
    assert [(d.id, d.action, d.label, d.note, d.reviewer) for d in merged.decisions] == [
        (ids[1], "relabel", model[1], "clearly the other class", "ana@example.org"),
        (123456, "keep", "", "", ""),
        (ids[0], "keep", "", "", "label-studio user 1"),
        (ids[2], "drop", "", "", "label-studio user 1"),
        (ids[5], "keep", "", "", "label-studio user 1"),
        (ids[6], "keep", "", "", "label-studio user 1"),
    ]
    # the round trip ends in the data: prepare applies what the annotators decided
    applied = prepare(TableSource(train=str(tmp_path / "sst.csv"),
                                  text_columns=["sentence"]).load(),
                      tmp_path / "corrected", val=0.2, test=0.2, label_noise=0.0, seed=0,
                      corrections=Corrections(tuple(d for d in merged.decisions
                                                    if d.id != 123456), "corr.csv"))
    assert applied["corrections"]["train"] == {"relabel": 1, "drop": 1, "keep": 3}
    after = read_split(tmp_path / "corrected", "train")
    assert ids[2] not in after.ids
    names = read_meta(prepared)["class_names"]
    assert names[after.labels[list(after.ids).index(ids[1])]] == model[1]


def test_the_import_says_what_it_merged_and_ignored(tmp_path, capsys):
    prepared = text_prepared(tmp_path)
    queue = fake_queue(prepared, tmp_path / "q.csv", n=3)
    export_labelstudio(tmp_path / "q.csv", prepared, tmp_path / "t.json", tmp_path / "c.xml")
    tasks = json.loads((tmp_path / "t.json").read_text())
    at = "2024-05-02T12:00:00Z"
    export = labelstudio_export(tasks, {
        0: [annotation(queue["model_label"][0], number=1, at=at),
            annotation(queue["given_label"][0], number=2, at="2024-05-02T12:00:01+00:00")],
        1: [annotation(None, number=3, at=at, cancelled=True)]})
    (tmp_path / "e.json").write_text(json.dumps(export))
    assert cli_main(["corrections", "import-labelstudio", str(tmp_path / "e.json"),
                     "--corrections", str(tmp_path / "new.csv"), "--prepared",
                     str(prepared)]) == 0
    out = capsys.readouterr().out
    assert "1 decision(s) from 3 task(s)" in out and "0 relabel, 1 keep, 0 drop" in out
    assert "1 cancelled/skipped annotation(s), 1 task(s) without annotations" in out
    assert f"1 example(s) with disagreeing annotations (ground truth, else the latest, " \
           f"counts): ids {queue['id'][0]}" in out
    assert (tmp_path / "new.csv").read_text() == \
        f"id,action,label,note,reviewer\n{queue['id'][0]},keep,,,label-studio user 1\n"


@pytest.fixture
def exported(tmp_path) -> tuple[Path, list[dict], pd.DataFrame]:
    prepared = text_prepared(tmp_path)
    queue = fake_queue(prepared, tmp_path / "q.csv", n=2)
    export_labelstudio(tmp_path / "q.csv", prepared, tmp_path / "t.json", tmp_path / "c.xml")
    return prepared, json.loads((tmp_path / "t.json").read_text()), queue


IMPORT_REFUSALS = [
    ("unknown-control", lambda export, q: export[0]["annotations"][0]["result"][0].update(
        from_name="sentiment"), ("a result of control 'sentiment'", "labeling_config.xml")),
    ("unknown-class", lambda export, q: export[0]["annotations"][0]["result"][0]["value"].update(
        choices=["neutral"]), ("class 'neutral' is not a class name of meta.json",)),
    ("two-classes", lambda export, q: export[0]["annotations"][0]["result"][0]["value"].update(
        choices=["negative", "positive"]), ("2 classes chosen", "choose one class")),
    ("no-datamap-id", lambda export, q: export[0]["data"].pop("id"),
     ("task 100 has no integer data.id", "datamap corrections export-labelstudio")),
    ("bad-time", lambda export, q: export[0]["annotations"][0].update(updated_at="yesterday"),
     ("updated_at 'yesterday' is not an ISO 8601 time",)),
]


@pytest.mark.parametrize("case", IMPORT_REFUSALS, ids=[c[0] for c in IMPORT_REFUSALS])
def test_a_bad_export_is_refused_in_one_line_and_writes_nothing(case, exported, tmp_path,
                                                                capsys):
    prepared, tasks, queue = exported
    _, change, fragments = case
    export = labelstudio_export(tasks, {0: [annotation(queue["model_label"][0], number=1,
                                                       at="2024-05-02T12:00:00Z")]})
    change(export, queue)
    (tmp_path / "e.json").write_text(json.dumps(export))
    (tmp_path / "corr.csv").write_text("id,action\n5,keep\n")
    code = cli_main(["corrections", "import-labelstudio", str(tmp_path / "e.json"),
                     "--corrections", str(tmp_path / "corr.csv"), "--prepared", str(prepared)])
    assert_refused(code, capsys.readouterr().err, *fragments)
    assert (tmp_path / "corr.csv").read_text() == "id,action\n5,keep\n"


def test_other_export_formats_are_refused(tmp_path, capsys):
    (tmp_path / "min.json").write_text(json.dumps([{"id": 1, "text": "x", "label": "a",
                                                    "annotator": 1}]))
    (tmp_path / "broken.json").write_text("[{")
    prepared = text_prepared(tmp_path)
    for name, fragment in (("min.json", "a JSON-MIN or CSV export?"),
                           ("broken.json", "not a JSON file"),
                           ("missing.json", "Label Studio export not found")):
        code = cli_main(["corrections", "import-labelstudio", str(tmp_path / name),
                         "--corrections", str(tmp_path / "c.csv"), "--prepared", str(prepared)])
        assert_refused(code, capsys.readouterr().err, fragment)
    assert not (tmp_path / "c.csv").exists()


def test_a_chosen_class_is_read_by_the_label_rule():
    # a choice "1.0" (a labeling config edited by hand) is the class 1, as in every data file;
    # a choice that names no class is refused
    tasks = [{"id": 1, "data": {"id": 5, "given_label": "0"},
              "annotations": [annotation("1.0", number=1, at="2024-01-01T00:00:00Z")]}]
    report = decisions_from_export(tasks, ["0", "1"])
    assert report.decisions == [Decision(5, "relabel", "1", "", "label-studio user 1")]
    tasks[0]["annotations"] = [annotation("0.0", number=1, at="2024-01-01T00:00:00Z")]
    assert decisions_from_export(tasks, ["0", "1"]).decisions[0].action == "keep"
    tasks[0]["annotations"] = [annotation("2", number=1, at="2024-01-01T00:00:00Z")]
    with pytest.raises(DataError, match="class '2' is not a class name of meta.json"):
        decisions_from_export(tasks, ["0", "1"])


def test_the_queue_is_read_as_strings(tmp_path):
    (tmp_path / "q.csv").write_text("rank,id,given_label,model_label\n1,7,01,1.0\n")
    queue = read_queue(tmp_path / "q.csv")
    assert queue["given_label"].tolist() == ["01"] and queue["model_label"].tolist() == ["1.0"]
    assert queue["id"].tolist() == [7]


def test_a_relabel_label_is_read_by_the_canonical_label_rule():
    # "1.0" in a corrections file is the class 1, " positive " the class positive: the rule
    # every data file's labels follow (datamap.data.labels)
    from datamap.data.corrections import apply_corrections
    from datamap.data.sources import RawData

    def split(ids):
        return RawData(labels=np.zeros(len(ids), dtype=np.int64), ids=np.asarray(ids),
                       class_names=["0", "1"], x=np.zeros((len(ids), 1), dtype=np.float32))

    splits = {"train": split([0, 1, 2]), "val": split([3]), "test": split([4])}
    decisions = (Decision(1, "relabel", "1.0"), Decision(3, "relabel", " 1 "))
    applied = apply_corrections(Corrections(decisions, "c.csv"), splits, ["0", "1"])
    assert applied.splits["train"].labels.tolist() == [0, 1, 0]
    assert applied.splits["val"].labels.tolist() == [1]
    assert applied.table.column("label_after").to_pylist() == ["1", "1"]

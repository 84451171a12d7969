"""Import/export of allenai/cartography's dynamics_epoch_<e>.jsonl directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datamap.dynamics.reference import export_reference_dynamics, import_reference_dynamics
from datamap.dynamics.storage import write_dynamics
from datamap.dynamics.values import per_example_values
from datamap.errors import DataError

from .helpers import make_table


def write_reference(directory: Path, logits: np.ndarray, gold, guids, epochs=None) -> Path:
    """Reference-format files as its logger writes them (json per line), logits [E, N, K]."""
    directory.mkdir(parents=True, exist_ok=True)
    for e in range(logits.shape[0]) if epochs is None else epochs:
        with open(directory / f"dynamics_epoch_{e}.jsonl", "w") as f:
            for i, guid in enumerate(guids):
                f.write(json.dumps({"guid": int(guid),
                                    f"logits_epoch_{e}": [float(x) for x in logits[e, i]],
                                    "gold": int(gold[i])}) + "\n")
    return directory


@pytest.fixture
def ref_dir(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(3, 5, 3)).astype(np.float32)
    return write_reference(tmp_path / "td", logits, [0, 2, 1, 1, 0], [7, 3, 11, 5, 9]), logits


def test_import_builds_the_dynamics_table(ref_dir):
    directory, logits = ref_dir
    table = import_reference_dynamics(directory)
    assert table.num_rows == 15
    assert table.column("id").to_pylist()[:5] == [3, 5, 7, 9, 11]
    assert table.column("epoch").to_pylist() == [0] * 5 + [1] * 5 + [2] * 5
    order = [1, 3, 0, 4, 2]  # file rows of ids 3, 5, 7, 9, 11
    gold = np.array([0, 2, 1, 1, 0])[order]
    np.testing.assert_array_equal(table.column("gold").to_numpy()[:5], gold)
    stored = table.column("logits").combine_chunks().flatten().to_numpy().reshape(15, 3)
    np.testing.assert_array_equal(stored[5:10], logits[1, order])
    expected = per_example_values(logits[2, order], gold)
    for name, values in expected.items():
        np.testing.assert_array_equal(table.column(name).to_numpy()[10:], values, err_msg=name)
    meta = json.loads(table.schema.metadata[b"datamap"])
    assert meta["num_classes"] == 3 and meta["mode"] == "train_pass"
    assert meta["records_per_epoch"] == 1


def test_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 5, size=(4, 30, 4)).astype(np.float32)
    extreme = np.array([0.1, 1e-30, -3.0e38, -0.0, 1e-45, 123456789.0, 2.5e-5, 7.0],
                       np.float32).reshape(2, 4)
    logits[0, :2] = extreme
    gold = rng.integers(0, 4, 30)
    first = import_reference_dynamics(write_reference(tmp_path / "a", logits, gold,
                                                      rng.permutation(100)[:30]))
    export_reference_dynamics(first, tmp_path / "b")
    second = import_reference_dynamics(tmp_path / "b")
    assert first.equals(second, check_metadata=True)
    again = first.column("logits").combine_chunks().flatten().to_numpy()
    back = second.column("logits").combine_chunks().flatten().to_numpy()
    assert again.tobytes() == back.tobytes()  # bit-exact, including -0.0 and subnormals
    export_reference_dynamics(second, tmp_path / "c")
    for e in range(4):
        name = f"dynamics_epoch_{e}.jsonl"
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "c" / name).read_bytes()
    line = json.loads((tmp_path / "b" / "dynamics_epoch_0.jsonl").read_text().splitlines()[0])
    assert list(line) == ["guid", "logits_epoch_0", "gold"]


def test_export_from_a_parquet_path_and_json_extension(tmp_path, ref_dir):
    directory, _ = ref_dir
    table = import_reference_dynamics(directory)
    write_dynamics(tmp_path / "d.parquet", table)
    files = export_reference_dynamics(tmp_path / "d.parquet", tmp_path / "out")
    assert [f.name for f in files] == [f"dynamics_epoch_{e}.jsonl" for e in range(3)]
    # the reference reader opens .json files: accepted too, as is the model directory
    model = tmp_path / "model" / "training_dynamics"
    model.mkdir(parents=True)
    for f in files:
        (model / f.name.replace(".jsonl", ".json")).write_bytes(f.read_bytes())
    assert import_reference_dynamics(tmp_path / "model").equals(table)


def _break(directory: Path, epoch: int, lines: list[str] | None = None, append: str = ""):
    path = directory / f"dynamics_epoch_{epoch}.jsonl"
    text = path.read_text().splitlines()
    if lines is not None:
        text = lines
    path.write_text("\n".join(text) + "\n" + append)
    return path


def _line(guid, logits, gold, epoch):
    return json.dumps({"guid": guid, f"logits_epoch_{epoch}": logits, "gold": gold})


@pytest.mark.parametrize("case", [
    "stray", "subdir", "gap", "missing_guid", "extra_guid", "duplicate_guid", "gold_change",
    "logit_lengths", "logit_lengths_between_epochs", "malformed", "not_object", "no_gold",
    "string_guid", "bool_gold", "gold_out_of_range", "nan_logit", "overflow", "one_logit",
    "empty_file", "duplicate_epoch",
])
def test_malformed_reference_input_names_the_file(ref_dir, case):
    directory, logits = ref_dir
    lines1 = (directory / "dynamics_epoch_1.jsonl").read_text().splitlines()
    if case == "stray":
        (directory / "notes.txt").write_text("hi")
        where, match = "notes.txt", "stray file"
    elif case == "subdir":
        (directory / "old").mkdir()
        where, match = "old", "stray directory"
    elif case == "gap":
        (directory / "dynamics_epoch_1.jsonl").unlink()
        where, match = "td", "dynamics_epoch_1.jsonl is missing"
    elif case == "missing_guid":
        _break(directory, 1, lines1[:2] + lines1[3:])
        where, match = "dynamics_epoch_1.jsonl", "guid 11 .* is missing from this epoch"
    elif case == "extra_guid":
        _break(directory, 2, append=_line(99, [0.0, 1.0, 2.0], 1, 2) + "\n")
        where, match = "dynamics_epoch_2.jsonl:6", "guid 99 is not in dynamics_epoch_0.jsonl"
    elif case == "duplicate_guid":
        _break(directory, 1, lines1[:4] + [lines1[0]])
        where, match = "dynamics_epoch_1.jsonl:5", r"guid 7 appears twice .*also line 1"
    elif case == "gold_change":
        _break(directory, 2, append="")
        text = (directory / "dynamics_epoch_2.jsonl").read_text().splitlines()
        text[3] = _line(5, [0.0, 1.0, 2.0], 0, 2)
        _break(directory, 2, text)
        where, match = "dynamics_epoch_2.jsonl:4", "gold label of guid 5 is 0, but .*:4 has 1"
    elif case == "logit_lengths":
        _break(directory, 1, lines1[:3] + [_line(5, [0.0, 1.0], 1, 1)] + lines1[4:])
        where, match = "dynamics_epoch_1.jsonl:4", "2 logits, but line 1 has 3"
    elif case == "logit_lengths_between_epochs":
        _break(directory, 1, [_line(g, [0.0, 1.0, 2.0, 3.0], y, 1)
                              for g, y in [(7, 0), (3, 2), (11, 1), (5, 1), (9, 0)]])
        where, match = "dynamics_epoch_1.jsonl", "4 logits but dynamics_epoch_0.jsonl has 3"
    elif case == "malformed":
        _break(directory, 1, lines1[:2] + ['{"guid": 11, "logits_epoch_1": [1.0, '] + lines1[3:])
        where, match = "dynamics_epoch_1.jsonl:3", "malformed JSON"
    elif case == "not_object":
        _break(directory, 0, append="[1, 2, 3]\n")
        where, match = "dynamics_epoch_0.jsonl:6", "expected a JSON object"
    elif case == "no_gold":
        _break(directory, 1, lines1[:1] + ['{"guid": 3, "logits_epoch_1": [1, 2, 3]}']
               + lines1[2:])
        where, match = "dynamics_epoch_1.jsonl:2", "no 'gold' field"
    elif case == "string_guid":
        _break(directory, 1, lines1[:1] + [_line("3", [0.0, 1.0, 2.0], 2, 1)] + lines1[2:])
        where, match = "dynamics_epoch_1.jsonl:2", "guid must be a 64-bit integer"
    elif case == "bool_gold":
        _break(directory, 1, lines1[:1] + [_line(3, [0.0, 1.0, 2.0], True, 1)] + lines1[2:])
        where, match = "dynamics_epoch_1.jsonl:2", "gold must be the index"
    elif case == "gold_out_of_range":
        _break(directory, 0, append=_line(4, [0.0, 1.0, 2.0], 3, 0) + "\n")
        where, match = "dynamics_epoch_0.jsonl:6", "gold 3 is not one of the 3 classes"
    elif case == "nan_logit":
        _break(directory, 1, lines1[:1] + ['{"guid": 3, "logits_epoch_1": [NaN, 1, 2], '
                                           '"gold": 2}'] + lines1[2:])
        where, match = "dynamics_epoch_1.jsonl:2", "non-finite"
    elif case == "overflow":
        _break(directory, 1, lines1[:1] + [_line(3, [1e39, 1.0, 2.0], 2, 1)] + lines1[2:])
        where, match = "dynamics_epoch_1.jsonl:2", "float32 range"
    elif case == "one_logit":
        for e in range(3):
            _break(directory, e, [_line(g, [0.5], 0, e) for g in (1, 2)])
        where, match = "dynamics_epoch_0.jsonl:1", "1 logit"
    elif case == "empty_file":
        (directory / "dynamics_epoch_2.jsonl").write_text("\n")
        where, match = "dynamics_epoch_2.jsonl", "no records"
    else:  # duplicate_epoch
        (directory / "dynamics_epoch_1.json").write_text(
            (directory / "dynamics_epoch_1.jsonl").read_text())
        where, match = "dynamics_epoch_1.jsonl", "epoch 1 is also in dynamics_epoch_1.json"
    with pytest.raises(DataError, match=match) as info:
        import_reference_dynamics(directory)
    assert where in str(info.value)


def test_export_errors(tmp_path):
    with pytest.raises(DataError, match="no logits column"):
        export_reference_dynamics(make_table(), tmp_path / "x")
    with pytest.raises(DataError, match="2 records per epoch"):
        export_reference_dynamics(make_table(records=2, logits=True), tmp_path / "x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "model.bin").write_text("x")
    with pytest.raises(DataError, match="holds other files"):
        export_reference_dynamics(make_table(logits=True), tmp_path / "busy")
    assert not (tmp_path / "x").exists()
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["model.bin"]
    # an earlier export is replaced whole
    export_reference_dynamics(make_table(epochs=3, logits=True), tmp_path / "prev")
    export_reference_dynamics(make_table(epochs=2, logits=True), tmp_path / "prev")
    assert sorted(p.name for p in (tmp_path / "prev").iterdir()) == [
        "dynamics_epoch_0.jsonl", "dynamics_epoch_1.jsonl"]

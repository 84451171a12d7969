"""The scoring audit's findings (1, 2, 3, 5, 6), each pinned by a test that failed before its
fix: dynamics columns of the wrong type, scores that depended on how the ids were cut into
blocks, a boolean option read with ``bool()``, a retraining plan that counted specs its own way,
and sweep fractions whose spec names collide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datamap.cli import main
from datamap.dynamics.schema import DynamicsMeta, build_dynamics
from datamap.dynamics.storage import open_dynamics, read_dynamics, write_dynamics
from datamap.errors import ConfigError, DataError
from datamap.scoring.registry import confidence, moments
from datamap.scoring.scores import compute_scores, scores_from_arrays, write_scores
from datamap.scoring.streaming import write_scores_of
from datamap.selection.plan import grid_plan, spec_examples
from datamap.selection.ranking import select
from datamap.selection.specs import all_specs, sweep_specs

from .helpers import assert_refused, make_columns, make_table, stage_in_process

# --------------------------------------------------------------------------------------------
# 1. every reader checks each dynamics column's type


def _with(table: pa.Table, name: str, values) -> pa.Table:
    return table.set_column(table.column_names.index(name), name, pa.array(values))


def _column(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy()


#: (column, the values written, the type the message names): what other tools write.
WRONG = {
    "pred-float": ("pred", lambda t: _column(t, "pred") + 0.25, "float64, expected int32"),
    "gold-float": ("gold", lambda t: _column(t, "gold") + 0.5, "float64, expected int32"),
    "id-float": ("id", lambda t: _column(t, "id") + 0.5, "float64, expected int64"),
    "id-string": ("id", lambda t: _column(t, "id").astype(str), "string, expected int64"),
    "p_gold-bool": ("p_gold", lambda t: _column(t, "p_gold") > 0.5, "bool, expected float32"),
    "p_gold-float64": ("p_gold", lambda t: _column(t, "p_gold").astype(np.float64),
                       "float64, expected float32"),
    "epoch-int64": ("epoch", lambda t: _column(t, "epoch").astype(np.int64),
                    "int64, expected int32"),
    "pred-uint32": ("pred", lambda t: _column(t, "pred").astype(np.uint32),
                    "uint32, expected int32"),
    "id-uint64-beyond-int64": (
        "id", lambda t: _column(t, "id").astype(np.uint64) + np.uint64(2**63),
        r"uint64 and holds id \d+, beyond the int64 range"),
}
SOURCES = ("table", "chunked-file", "file", "read_dynamics")


def _read(table: pa.Table, how: str, tmp_path: Path):
    if how == "table":
        return compute_scores(table)
    path = tmp_path / "d.parquet"
    # one row group per (epoch, record), as write_dynamics cuts them, or one for the whole file
    pq.write_table(table, path, row_group_size=6 if how == "chunked-file" else None)
    return read_dynamics(path) if how == "read_dynamics" else compute_scores(path)


@pytest.mark.parametrize("how", SOURCES)
@pytest.mark.parametrize("case", list(WRONG))
def test_a_column_of_another_type_is_refused_by_every_reader(case, how, tmp_path):
    name, values, says = WRONG[case]
    table = make_table(n=6, epochs=3, k=3, seed=0)
    with pytest.raises(DataError, match=f"column '{name}' is {says}"):
        _read(_with(table, name, values(table)), how, tmp_path)


@pytest.mark.parametrize("how", SOURCES)
def test_lossless_integer_widths_score_as_the_schema_types(how, tmp_path):
    table = make_table(n=6, epochs=3, k=3, seed=0)
    narrow = _with(table, "pred", _column(table, "pred").astype(np.int16))
    narrow = _with(narrow, "epoch", _column(table, "epoch").astype(np.uint8))
    narrow = _with(narrow, "id", _column(table, "id").astype(np.uint64))  # all within int64
    if how == "read_dynamics":  # handed on in the schema's types
        assert _read(narrow, how, tmp_path).schema.equals(table.schema, check_metadata=False)
    else:
        assert _read(narrow, how, tmp_path).equals(compute_scores(table))


def test_datamap_scores_refuses_a_wrong_type_in_one_line(tmp_path, capsys):
    table = make_table(n=6, epochs=3, k=3, seed=0)
    src = tmp_path / "bad_id.parquet"
    pq.write_table(_with(table, "id", _column(table, "id").astype(np.uint64)
                         + np.uint64(2**63)), src)
    assert main(["scores", str(src), str(tmp_path / "s.parquet")]) == 2  # was a traceback
    lines = [line for line in capsys.readouterr().err.splitlines()
             if line.startswith("error: ")]
    assert len(lines) == 1 and "bad_id.parquet: column 'id' is uint64" in lines[0]
    assert not (tmp_path / "s.parquet").exists()


# --------------------------------------------------------------------------------------------
# 2. the same dynamics give the same bits however they are cut into blocks

#: p_gold of one curve shared by three examples (the audit's): a tie that must break by id.
TIED = np.array([0.7294965386390686, 0.6322707533836365, 0.5436249375343323,
                 0.5599173903465271, 0.9350724220275879], dtype=np.float32)


def _tied_table() -> pa.Table:
    e, ids = len(TIED), np.array([0, 1, 2])
    p = np.repeat(TIED, 3)
    cols = {"id": np.tile(ids, e), "epoch": np.repeat(np.arange(e), 3),
            "record": np.zeros(3 * e), "gold": np.zeros(3 * e), "p_gold": p,
            "pred": np.zeros(3 * e), "margin": np.ones(3 * e), "loss": -np.log(p),
            "el2n": (1 - p) * np.sqrt(2)}
    return build_dynamics(cols, DynamicsMeta(num_classes=2))


def test_tied_curves_tie_in_memory_and_from_a_file(tmp_path):
    table = _tied_table()
    write_dynamics(tmp_path / "tie.parquet", table)
    for source in (table, tmp_path / "tie.parquet"):
        scores = compute_scores(source, chunk_rows=10)  # two ids, then one, per block
        assert scores["variability"].nunique() == 1, source
        assert scores["region"].astype(str).tolist() == ["ambiguous", "hard-to-learn",
                                                         "easy-to-learn"]
        assert select(scores, "a", {"ambiguous": 0.33}, 0)["id"].tolist() == [0]  # smaller id


def test_moments_do_not_depend_on_the_layout_of_the_block():
    rng = np.random.default_rng(0)
    grid = rng.random((40, 7)).astype(np.float32)  # [slots, ids], as a chunk holds them
    whole = moments(np.ascontiguousarray(grid.T))
    for a in range(7):  # one id at a time (contiguous), and the strided view of the rest
        for part, rows in ((grid[:, a:a + 1].T, slice(a, a + 1)), (grid[:, a:].T, slice(a, 7))):
            for got, want in zip(moments(part), whole, strict=True):
                np.testing.assert_array_equal(got, want[rows])
    np.testing.assert_array_equal(confidence(grid.T), whole[0])


@pytest.mark.parametrize("n, epochs, records", [(37, 9, 1), (23, 5, 2), (3, 5, 1)])
def test_written_scores_are_the_same_bytes_from_any_source_and_block_size(
        n, epochs, records, tmp_path):
    if n == 3:
        table = _tied_table()
    else:
        table = make_table(n=n, epochs=epochs, records=records, k=3, seed=n)
    slots = epochs * records
    written = []

    def keep(scores: pd.DataFrame, label: str) -> None:
        path = tmp_path / f"{label}.parquet"
        write_scores(path, scores)
        written.append((label, path.read_bytes()))

    for ids_per_chunk in (1, 2, 5, n):
        keep(compute_scores(table, chunk_rows=ids_per_chunk * slots), f"table-{ids_per_chunk}")
    for group in (1, 4, 1 << 18):
        path = tmp_path / f"d{group}.parquet"
        write_dynamics(path, table, row_group_ids=group)
        for ids_per_chunk in (1, 3, n):
            keep(compute_scores(path, chunk_rows=ids_per_chunk * slots),
                 f"file-{group}-{ids_per_chunk}")
            write_scores_of(path, tmp_path / "streamed.parquet",
                            chunk_rows=ids_per_chunk * slots)
            written.append((f"streamed-{group}-{ids_per_chunk}",
                            (tmp_path / "streamed.parquet").read_bytes()))
    # the arrays of a notebook, [N, R] C-ordered; they carry no split or recording mode, the
    # one difference of the options metadata
    source = open_dynamics(table)
    (chunk,) = source.chunks(["p_gold", "pred", "margin", "loss", "el2n"])
    v = {name: np.ascontiguousarray(grid.T) for name, grid in chunk.values.items()}
    arrays = scores_from_arrays(v["p_gold"], v["pred"], chunk.gold, margin=v["margin"],
                                loss=v["loss"], el2n_values=v["el2n"], ids=chunk.ids,
                                records_per_epoch=records)
    reference = compute_scores(table)
    assert {k: arrays.attrs[k] for k in arrays.attrs} == \
        {k: reference.attrs[k] for k in arrays.attrs}
    arrays.attrs = dict(reference.attrs)
    keep(arrays, "arrays")
    first_label, first = written[0]
    differ = [label for label, data in written if data != first]
    assert not differ, f"not the bytes of {first_label}: {differ}"


# --------------------------------------------------------------------------------------------
# 3. include_ci is a boolean, never bool(...) of a string


@pytest.mark.parametrize("value", ["false", "no", 0, 1, None])
def test_include_ci_must_be_a_boolean(value):
    table = make_table(n=6, epochs=3)
    with pytest.raises(ConfigError, match="include_ci must be true or false, got"):
        compute_scores(table, include_ci=value)
    p = np.full((2, 3), 0.5)
    with pytest.raises(ConfigError, match="include_ci must be true or false, got"):
        scores_from_arrays(p, np.zeros((2, 3), int), np.zeros(2, int), include_ci=value)


def _cartography_inputs(root: Path, pred_type: str = "int32") -> None:
    """Prepared numeric data and dynamics of its train split (``pred`` stored as
    ``pred_type``)."""
    from datamap.data import TableSource
    from datamap.data.prepare import prepare
    from datamap.data.splits import read_split

    from .helpers import numeric_frame

    numeric_frame(60).to_csv(root / "num.csv", index=False)
    source = TableSource(train=str(root / "num.csv"), label_column="y")
    prepare(source.load(), root / "data" / "prepared", val=0.2, test=0.2, label_noise=0.0,
            seed=0)
    train = read_split(root / "data" / "prepared", "train")
    cols, _, _ = make_columns(len(train.ids), k=3, ids=np.asarray(train.ids),
                              gold=np.asarray(train.labels))
    table = build_dynamics(cols, DynamicsMeta(num_classes=3))
    (root / "data" / "train").mkdir(parents=True)
    if pred_type == "int32":
        write_dynamics(root / "data" / "train" / "dynamics.parquet", table)
    else:
        pq.write_table(_with(table, "pred", _column(table, "pred").astype(pred_type)),
                       root / "data" / "train" / "dynamics.parquet")


@pytest.mark.parametrize("overrides, pred_type, says", [
    (("cartography.include_ci='false'",), "int32",
     ("cartography.include_ci must be true or false, got 'false'",)),
    (("+selection.specs.bad={random: abc}",), "int32",
     ("selection.specs.bad.random must be a fraction in [0, 1], got 'abc'",)),
    (("+selection.specs.bad={random: true}",), "int32",
     ("selection.specs.bad.random must be a fraction in [0, 1], got True",)),
    ((), "float64", ("dynamics.parquet: column 'pred' is float64, expected int32",)),
])
def test_the_cartography_stage_refuses_before_writing_anything(overrides, pred_type, says,
                                                               tmp_path):
    _cartography_inputs(tmp_path, pred_type)
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    code, stderr = stage_in_process("cartography", *overrides, cwd=tmp_path)
    assert_refused(code, stderr, *says)
    assert not (tmp_path / "data" / "cartography").exists()
    assert {p for p in tmp_path.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("ids_file, content, says", [
    ("data/selections/twice.csv", "id\n1\n1\n", "twice.csv: id 1 is listed 2 times"),
    ("data/selections/none.csv", "uid\n1\n", "none.csv"),
    ("elsewhere/ids.csv", "id\n1\n", "is outside data/selections/"),
    ("data/selections/ids.txt", "id\n1\n", "must be a .csv or .parquet file"),
])
def test_the_cartography_stage_checks_an_ids_file_before_writing_anything(ids_file, content,
                                                                          says, tmp_path):
    _cartography_inputs(tmp_path, "int32")
    (tmp_path / ids_file).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / ids_file).write_text(content)
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    code, stderr = stage_in_process("cartography", f"+selection.specs.mine.ids_file={ids_file}",
                                    cwd=tmp_path)
    assert_refused(code, stderr, says)
    assert not (tmp_path / "data" / "cartography").exists()
    assert {p for p in tmp_path.rglob("*") if p.is_file()} == before


# --------------------------------------------------------------------------------------------
# 5. the plan counts each spec as the selection draws it


@pytest.mark.parametrize("n", [10, 7, 101])
@pytest.mark.parametrize("spec", [
    {"ambiguous": 0.25, "easy_to_learn": 0.25}, {"ambiguous": 0.15, "easy_to_learn": 0.15},
    {"hard_to_learn": 0.05, "random": 0.05, "ambiguous": 0.05}, {"random": 1.0},
    {"ambiguous": 0.35, "hard_to_learn": 0.35, "random": 0.3},
])
def test_the_plan_counts_the_examples_the_selection_draws(spec, n):
    scores = pd.DataFrame({"id": np.arange(n), "gold": np.arange(n) % 2,
                           "confidence": np.linspace(0, 1, n),
                           "variability": np.linspace(0.5, 0, n)})
    for stratify in (False, True):
        assert spec_examples(spec, n) == len(select(scores, "m", spec, 0, stratify=stratify))
    assert grid_plan({"m": spec}, n, [0], 1).specs[0].examples == spec_examples(spec, n)


@pytest.mark.parametrize("spec, says", [
    ({"random": "abc"}, "selection.specs.bad.random must be a fraction"),
    ({"random": True}, "selection.specs.bad.random must be a fraction"),
    ({"ambigous": 0.1}, "selection.specs.bad.ambigous: unknown criterion"),
])
def test_the_plan_refuses_what_the_selection_refuses(spec, says):
    with pytest.raises(ConfigError, match=says):
        spec_examples(spec, 10, "bad")


# --------------------------------------------------------------------------------------------
# 6. two sweep points with one name are refused, never merged


@pytest.mark.parametrize("sweep, says", [
    ({"regions": ["ambiguous"], "fractions": [0.1, 0.1000001]},
     "ambiguous at 0.1 and ambiguous at 0.1000001 both get the spec name ambiguous_10"),
    ({"regions": ["ambiguous"], "fractions": [0.3333333, 0.33333333]},
     "both get the spec name ambiguous_33p3333"),
    ({"regions": ["ambiguous"], "fractions": [0.25, 0.25]},
     "selection.sweep.fractions lists 0.25 twice"),
    ({"regions": ["random", "random"], "fractions": [0.25]},
     "selection.sweep.regions lists 'random' twice"),
])
def test_sweep_points_whose_names_collide_are_refused(sweep, says):
    with pytest.raises(ConfigError, match=says):
        sweep_specs(sweep)
    with pytest.raises(ConfigError, match=says):
        all_specs({"full": {"random": 1.0}}, sweep)


def test_distinct_sweep_points_keep_their_own_specs():
    grid = sweep_specs({"regions": ["ambiguous", "hard_to_learn"], "fractions": [0.1, 0.125]})
    assert grid == {"ambiguous_10": {"ambiguous": 0.1}, "ambiguous_12p5": {"ambiguous": 0.125},
                    "hard_10": {"hard_to_learn": 0.1}, "hard_12p5": {"hard_to_learn": 0.125}}

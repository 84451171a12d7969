"""`datamap scores`, `datamap import-dynamics` and `datamap export-dynamics`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from datamap import scoring as S
from datamap.cli import main
from datamap.dynamics.storage import read_dynamics, write_dynamics

from .helpers import make_table


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_scores_command_writes_deterministic_scores(tmp_path, capsys):
    table = make_table(n=60, epochs=4, seed=3)
    write_dynamics(tmp_path / "dynamics_val.parquet", table)
    code, out, _ = run(capsys, "scores", str(tmp_path / "dynamics_val.parquet"),
                       str(tmp_path / "a.parquet"), "--burn-out", "3", "--include-ci",
                       "--region-rule", "quantile", "--ambiguous", "0.25", "--hard", "0.25")
    assert code == 0 and "60 examples over 3 record(s)" in out
    run(capsys, "scores", str(tmp_path / "dynamics_val.parquet"), str(tmp_path / "b.parquet"),
        "--burn-out", "3", "--include-ci", "--region-rule", "quantile", "--ambiguous", "0.25",
        "--hard", "0.25")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    back = S.read_scores(tmp_path / "a.parquet")
    expected = S.compute_scores(table, burn_out=3, include_ci=True,
                                regions={"rule": "quantile", "ambiguous": 0.25, "hard": 0.25})
    np.testing.assert_array_equal(back["variability"], expected["variability"])
    assert (back["region"] == S.AMBIGUOUS).sum() == 15 and (back["region"] == S.HARD).sum() == 15
    assert back.attrs["burn_out"] == 3 and back.attrs["include_ci"] is True


@pytest.mark.parametrize("case", ["missing", "not_parquet", "no_column", "duplicate", "option",
                                  "region_option", "threads", "output_is_input"])
def test_scores_command_errors(tmp_path, capsys, case):
    src = tmp_path / "dyn.parquet"
    args = []
    if case == "missing":
        fragments = ["dyn.parquet", "not found"]
    elif case == "not_parquet":
        src.write_text("id,epoch\n1,0\n")
        fragments = ["dyn.parquet", "not a readable Parquet file"]
    elif case == "no_column":
        import pyarrow.parquet as pq

        pq.write_table(make_table().drop_columns(["p_gold"]), src)
        fragments = ["dyn.parquet", "lacks column(s) p_gold"]
    elif case == "duplicate":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = make_table(n=4, epochs=2)
        ids = table.column("id").to_numpy().copy()
        ids[5] = ids[4]
        pq.write_table(table.set_column(0, "id", pa.array(ids)), src)
        fragments = ["dyn.parquet", f"id {ids[4]} appears more than once in epoch 1"]
    elif case == "option":
        write_dynamics(src, make_table())
        args = ["--burn-out", "0"]
        fragments = ["burn_out must be a positive integer"]
    elif case == "region_option":
        write_dynamics(src, make_table())
        args = ["--region-rule", "threshold", "--hard", "0.2"]
        fragments = ["unknown parameter(s) hard for rule 'threshold'"]
    elif case == "threads":
        write_dynamics(src, make_table())
        args = ["--threads", "0"]
        fragments = ["--threads must be at least 1"]
    else:  # a careless user names the input twice: the dynamics must survive
        write_dynamics(src, make_table())
        before = src.read_bytes()
        code, _, err = run(capsys, "scores", str(src), str(tmp_path / "." / "dyn.parquet"))
        assert_one_line_error(code, err, "is the dynamics file itself")
        assert src.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["dyn.parquet"]
        return
    code, _, err = run(capsys, "scores", str(src), str(tmp_path / "out.parquet"), *args)
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "out.parquet").exists()
    assert not any(p.name.startswith(".out.parquet") for p in tmp_path.iterdir())


def test_import_and_export_commands(tmp_path, capsys):
    table = make_table(n=8, epochs=3, logits=True)
    write_dynamics(tmp_path / "d.parquet", table)
    code, out, _ = run(capsys, "export-dynamics", str(tmp_path / "d.parquet"),
                       str(tmp_path / "ref"))
    assert code == 0 and "3 epoch file(s)" in out
    assert len(list((tmp_path / "ref").iterdir())) == 3
    code, out, _ = run(capsys, "import-dynamics", str(tmp_path / "ref"),
                       str(tmp_path / "back.parquet"))
    assert code == 0 and "8 examples x 3 epochs" in out
    back = read_dynamics(tmp_path / "back.parquet")
    assert back.drop_columns(["logits"]).select(table.column_names[:9]).equals(
        table.select(table.column_names[:9]))
    np.testing.assert_array_equal(
        back.column("logits").combine_chunks().flatten().to_numpy(),
        table.column("logits").combine_chunks().flatten().to_numpy())


def test_import_and_export_errors(tmp_path, capsys):
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "dynamics_epoch_0.jsonl").write_text(
        json.dumps({"guid": 1, "logits_epoch_0": [0.1, 0.2], "gold": 0}) + "\n{oops\n")
    code, _, err = run(capsys, "import-dynamics", str(tmp_path / "ref"),
                       str(tmp_path / "out.parquet"))
    assert_one_line_error(code, err, "dynamics_epoch_0.jsonl:2", "malformed JSON")
    assert not (tmp_path / "out.parquet").exists()
    write_dynamics(tmp_path / "d.parquet", make_table())
    code, _, err = run(capsys, "export-dynamics", str(tmp_path / "d.parquet"),
                       str(tmp_path / "exp"))
    assert_one_line_error(code, err, "d.parquet", "no logits column")
    assert not (tmp_path / "exp").exists()


def test_console_entry_point(tmp_path):
    write_dynamics(tmp_path / "d.parquet", make_table())
    ok = subprocess.run([sys.executable, "-m", "datamap.cli", "scores",
                         str(tmp_path / "d.parquet"), str(tmp_path / "s.parquet")],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and (tmp_path / "s.parquet").exists(), ok.stderr
    bad = subprocess.run([sys.executable, "-m", "datamap.cli", "scores",
                          str(tmp_path / "nope.parquet"), str(tmp_path / "t.parquet")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("error: ") and "nope.parquet" in bad.stderr
    assert not (tmp_path / "t.parquet").exists()


def test_list_scores_prints_the_registry(capsys):
    from datamap.scoring.registry import all_scores, registry_table

    code, out, _ = run(capsys, "list-scores")
    assert code == 0 and out.strip() == registry_table()
    for score in all_scores():
        row = next(line for line in out.splitlines() if line.startswith(f"| `{score.name}` |"))
        assert f"| {score.suspicious_when} | {score.why} |" in row

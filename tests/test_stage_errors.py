"""Bad input to a stage script: one line naming the key, exit code 2, no artifact written.

Two tests run the stage as a user runs it (a subprocess through Hydra's command line), to check
the real process around the task function; the others run the task function in this process on
the same composition (test_bad_input.py has the full catalogue)."""

from __future__ import annotations

import pytest

from .helpers import ROOT, assert_one_line_error, assert_refused, run_stage, stage_in_process


@pytest.mark.parametrize("rate", ["1.0", "-0.2"])
def test_prepare_refuses_label_noise_outside_unit_interval(tmp_path, rate):
    code, stderr = stage_in_process("prepare", f"data.label_noise={rate}", cwd=tmp_path)
    assert_refused(code, stderr, "data.label_noise", "[0, 1)")
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.parquet"))


def test_prepare_refuses_a_missing_table_file(tmp_path):
    result = run_stage("prepare", "data=table", "data.source.train=train.csv",
                       "data.source.text_columns=[sentence]", cwd=tmp_path)
    assert_one_line_error(result, "train.csv (data.source.train): file not found")
    assert not (tmp_path / "data" / "prepared").exists()


def test_unknown_spec_name(tmp_path):
    code, stderr = stage_in_process("select", "+spec=nonexistent", cwd=tmp_path)
    assert_refused(code, stderr, "spec='nonexistent'", "selection.specs")


def test_missing_input_names_the_file_and_the_fix(tmp_path):
    code, stderr = stage_in_process("cartography", cwd=tmp_path)
    assert_refused(code, stderr, "data/prepared/meta.json", "run the stage that produces it")
    assert not (tmp_path / "data" / "cartography").exists()


@pytest.mark.parametrize("group", ["model", "data"])
def test_unknown_option(tmp_path, group):
    """Catalogue row ``unknown-option``: Hydra's own message, listing the options."""
    options = ", ".join(sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml")))
    result = run_stage("train", f"{group}=nope", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"Could not find '{group}/nope'" in result.stderr
    listed = [line.strip() for line in result.stderr.split(f"Available options in '{group}':")[1]
              .split("Config search path")[0].splitlines() if line.strip()]
    assert ", ".join(listed).startswith(options)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("failure", ["errno", "library text"])
def test_a_full_disk_is_one_line_naming_the_output_and_its_size(tmp_path, monkeypatch, failure):
    # the file system fills 4 KiB into the first Parquet file: pyarrow reports it as an OSError
    # with errno, or (its own IO errors) with errno dropped and only the C library's text
    import errno

    import pyarrow.parquet as pq

    def fill_up(table, where, **options):
        with open(where, "wb") as handle:
            handle.write(b"\0" * 4096)
        if failure == "errno":
            raise OSError(errno.ENOSPC, "No space left on device", str(where))
        raise OSError("IOError: error writing bytes to file. Detail: [errno 28] No space left "
                      "on device")

    monkeypatch.setattr(pq, "write_table", fill_up)
    code, stderr = stage_in_process("prepare", cwd=tmp_path)
    assert_refused(code, stderr, "error: data/prepared/train.parquet: no space left on the device",
                   "after writing 4.0 KiB of data/prepared: it needs more than the ",
                   "the file system had for it", "free space on that file system")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing half-written


def test_a_full_disk_outside_the_atomic_writers_is_one_line(tmp_path, monkeypatch):
    # e.g. a checkpoint or a log file written by a library: the stage wrapper names the file
    import errno

    import stages.prepare as prepare_module

    def full(*args, **kwargs):
        raise OSError(errno.EDQUOT, "Disk quota exceeded", "data/prepared/some.ckpt")

    monkeypatch.setattr(prepare_module, "prepare_from_config", full)
    code, stderr = stage_in_process("prepare", cwd=tmp_path)
    assert_refused(code, stderr, "data/prepared/some.ckpt: no space left on the device")

"""benchmarks/workdir.py: the benchmarks never work in (or reuse data from) a directory that
another account owns or can write, and tests.helpers.copy_repo never copies into a used one."""

from __future__ import annotations

import importlib.util
import os
import stat
from pathlib import Path

import pytest

from .helpers import ROOT, copy_repo

FOREIGN_UID = 12345


def _load_workdir():
    spec = importlib.util.spec_from_file_location("bench_workdir",
                                                  ROOT / "benchmarks" / "workdir.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


workdir = _load_workdir()


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A private parent directory (pytest's tmp_path is 0700 and ours)."""
    tmp_path.chmod(0o700)
    return tmp_path


def refused(given: Path, capsys, **kwargs) -> str:
    with pytest.raises(SystemExit) as exit_info:
        workdir.private_workdir(given, "datamap-test-", **kwargs)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("refusing") and "\n" not in err  # one line
    return err


def test_default_is_a_new_private_temp_dir():
    path = workdir.private_workdir(None, "datamap-test-")
    try:
        st = os.lstat(path)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
        assert st.st_uid == os.getuid() and not any(path.iterdir())
        assert path.name.startswith("datamap-test-")
    finally:
        path.rmdir()


def test_accepts_a_new_or_an_empty_private_dir(base: Path):
    new = workdir.private_workdir(base / "new" / "deeper", "x-")
    assert new == base / "new" / "deeper" and new.is_dir()
    assert stat.S_IMODE(os.lstat(new).st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(base / "new").st_mode) == 0o700
    empty = base / "empty"
    empty.mkdir(mode=0o700)
    assert workdir.private_workdir(empty, "x-") == empty


def test_refuses_a_non_empty_dir_unless_it_keeps_a_cache(base: Path, capsys):
    used = base / "used"
    used.mkdir(mode=0o700)
    (used / "datamap").mkdir()
    assert "not empty" in refused(used, capsys)
    assert workdir.private_workdir(used, "x-", reuse=True) == used


def test_refuses_a_dir_of_another_account(base: Path, capsys):
    foreign = base / "foreign"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, FOREIGN_UID, -1)
    assert f"uid {FOREIGN_UID}" in refused(foreign, capsys)
    assert f"uid {FOREIGN_UID}" in refused(foreign, capsys, reuse=True)
    # nor anything below a directory of another account's
    assert f"uid {FOREIGN_UID}" in refused(foreign / "mine", capsys)


def test_refuses_a_dir_others_can_write(base: Path, capsys):
    open_dir = base / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    assert "writable by others" in refused(open_dir, capsys)
    assert "writable by others" in refused(open_dir, capsys, reuse=True)
    # a new directory inside one that others can write (no sticky bit) is refused too
    assert "without the sticky bit" in refused(open_dir / "new", capsys)
    assert not (open_dir / "new").exists()
    # with the sticky bit (as /tmp) a new directory of ours is fine
    open_dir.chmod(0o1777)
    assert workdir.private_workdir(open_dir / "new", "x-") == open_dir / "new"


def test_refuses_symlinks(base: Path, capsys):
    real = base / "real"
    real.mkdir(mode=0o700)
    link = base / "link"
    os.symlink(real, link)
    assert "symlink" in refused(link, capsys)
    assert "symlink" in refused(link / "inside", capsys)  # a symlinked parent
    assert not (real / "inside").exists()


def test_refuses_a_file(base: Path, capsys):
    (base / "file").write_text("x")
    assert "not a directory" in refused(base / "file", capsys)


def test_cached_reuses_only_private_data_of_ours(base: Path, capsys):
    work = workdir.private_workdir(base / "work", "x-", reuse=True)
    prepared = work / "texts_100"
    assert not workdir.cached(prepared)  # nothing there yet
    prepared.mkdir()
    assert not workdir.cached(prepared)  # no meta.json: not complete
    (prepared / "meta.json").write_text("{}")
    assert workdir.cached(prepared)

    prepared.chmod(0o777)  # someone else could have swapped the files
    with pytest.raises(SystemExit) as exit_info:
        workdir.cached(prepared)
    assert exit_info.value.code == 2 and "writable by others" in capsys.readouterr().err
    prepared.chmod(0o755)
    os.chown(prepared / "meta.json", FOREIGN_UID, -1)
    with pytest.raises(SystemExit):
        workdir.cached(prepared)
    os.chown(prepared / "meta.json", os.getuid(), -1)
    os.chown(prepared, FOREIGN_UID, -1)
    with pytest.raises(SystemExit):
        workdir.cached(prepared)
    capsys.readouterr()


def test_copy_repo_refuses_a_used_destination(base: Path):
    dest = base / "repo"
    dest.mkdir()
    (dest / "datamap").mkdir()  # a planted package
    with pytest.raises(FileExistsError):
        copy_repo(dest)
    link = base / "linked"
    os.symlink(base / "elsewhere", link)
    with pytest.raises(FileExistsError):
        copy_repo(link)
    assert not (base / "elsewhere").exists()


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks").glob("bench_*.py")))
def test_no_fixed_tmp_workdir(script: str):
    """No benchmark defaults to a fixed name under /tmp any more."""
    text = (ROOT / "benchmarks" / script).read_text()
    assert "/tmp/datamap-bench" not in text

"""A killed process and a shared machine: what an atomic write leaves behind never reaches DVC,
the bytes are on the disk before a name points at them, and datamap's own state directory is
private whatever the umask."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from datamap import io as dio
from datamap.models.tokens import TokenStore
from datamap.pipeline.config import COMPOSE_NOTE, write_compose_note

from .helpers import sh

ROOT = Path(__file__).resolve().parents[1]


def test_a_killed_writers_temporaries_do_not_change_dvc_status(tmp_path):
    repo = tmp_path / "repo"
    (repo / "data" / "out").mkdir(parents=True)
    shutil.copy(ROOT / ".dvcignore", repo / ".dvcignore")
    sh("git", "init", "-q", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    (repo / "data" / "out" / "scores.csv").write_text("id\n1\n")
    sh("dvc", "add", "-q", "data/out", cwd=repo)
    assert "up to date" in sh("dvc", "status", cwd=repo).stdout.lower() or \
        sh("dvc", "status", cwd=repo).stdout.strip() == ""
    # what kill -9 leaves: the temporary of atomic_path, a staging directory, a part's temp
    leftovers = [repo / "data" / "out" / ".scores.csv.k9x2ab.tmp" / "scores.csv",
                 repo / "data" / "out" / ".review.staging-q1w2e3" / "hard_to_learn.csv",
                 repo / "data" / "out" / ".epoch_00003.arrow.tmp"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half a file")
    status = sh("dvc", "status", cwd=repo).stdout
    assert "modified" not in status, status
    # and a real change is still seen
    (repo / "data" / "out" / "scores.csv").write_text("id\n2\n")
    assert "modified" in sh("dvc", "status", cwd=repo).stdout


def test_an_atomic_write_is_flushed_before_and_after_its_rename(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    dio.write_text(tmp_path / "out" / "a.txt", "x")
    temporary = [p for p in synced if p.endswith("a.txt") and ".tmp" in p]
    assert temporary, synced  # the file, while still under its temporary name
    assert synced[-1] == str(tmp_path / "out")  # then the directory that holds the new name
    synced.clear()
    with dio.staged_outputs(tmp_path / "stage") as staging:
        (staging / "b.txt").write_text("y")
    assert synced[-1] == str(tmp_path / "stage")


def test_datamap_state_is_private_whatever_the_umask(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o002)  # Ubuntu's default for user private groups
    try:
        write_compose_note(tmp_path, ROOT / "conf", ["seed=3"])
        assert (tmp_path / COMPOSE_NOTE).is_file()
        assert os.stat(tmp_path / ".datamap").st_mode & 0o777 == 0o700
        assert TokenStore().usable()  # not turned off by a group-writable .datamap
        os.chmod(tmp_path / ".datamap", 0o775)  # one an earlier version left
        write_compose_note(tmp_path, ROOT / "conf", ["seed=4"])
        assert os.stat(tmp_path / ".datamap").st_mode & 0o777 == 0o700
    finally:
        os.umask(old)

"""Safe on a shared machine: a stage trusts nothing another user can write.

An earlier design handed stage commands to a background server through a socket in a directory
under $TMPDIR (``datamap-preload-<uid>``), which another local user could create first, plant a
module in, or replace the socket of. Stages now run as the plain processes DVC starts; this test
keeps it that way: with such a directory prepared by an attacker (world-writable, a planted
``datamap`` package and a listening socket), a stage runs as usual, imports nothing from there,
connects to nothing and leaves no file behind in the temporary directory.
"""

from __future__ import annotations

import os
import socket
import sys
import threading

import pytest

from .helpers import ROOT, subprocess_env

pytestmark = pytest.mark.slow


def test_a_planted_socket_directory_is_never_used(tmp_path):
    import subprocess

    shared_tmp = tmp_path / "tmp"
    trap = shared_tmp / f"datamap-preload-{os.getuid()}"
    (trap / "datamap").mkdir(parents=True)
    trap.chmod(0o777)
    marker = tmp_path / "planted-code-ran"
    for name in ("__init__.py", "preload.py"):
        (trap / "datamap" / name).write_text(
            f"open({str(marker)!r}, 'w').write('ran')\n")
    connections = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(trap / "server.sock"))
    server.listen(4)
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            connections.append(conn.recv(65536))
            conn.close()

    listener = threading.Thread(target=accept, daemon=True)
    listener.start()
    work = tmp_path / "repo"
    work.mkdir()
    before = sorted(p.name for p in shared_tmp.iterdir())
    try:
        # what DVC runs: a stage command with DVC_STAGE set, the attacker's TMPDIR, the
        # secrets a user has in their environment
        result = subprocess.run(
            [sys.executable, "-m", "stages.prepare", "hydra.run.dir=.",
             "hydra.output_subdir=null", "hydra/job_logging=stdout", "hydra/hydra_logging=none",
             "data.controls.mnist.limit=50", "data.corrections=null"],
            cwd=work, capture_output=True, text=True, timeout=300,
            env=subprocess_env(PYTHONPATH=str(ROOT), DVC_STAGE="prepare",
                               TMPDIR=str(shared_tmp), WANDB_API_KEY="secret-key-123"))
    finally:
        stop.set()
        listener.join(timeout=5)
        server.close()
    assert result.returncode == 0, result.stderr
    assert (work / "data" / "prepared" / "train.parquet").is_file()
    assert not marker.exists(), "code planted in the shared directory ran"
    assert connections == [], "the stage connected to a socket in the shared directory"
    assert sorted(p.name for p in shared_tmp.iterdir()) == before
    assert result.stderr.strip() == ""

"""The preload server: a stage it runs behaves as the same stage run alone -- same output, exit
code, working directory, arguments, environment, code -- and signals reach it.

The stages here are small probe modules in a ``stages`` package of a temporary directory (with
the real ``stages/__init__.py``), run as ``python -m stages.probe`` with ``DVC_STAGE`` set, as
DVC runs them. The tests share one server of their own (a private socket directory and a key
variable of their own), started by the first probe. That the real pipeline gives the same bytes
through the server is tested in test_pipeline_e2e.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from datamap import preload

from .helpers import ROOT, subprocess_env

PROBE = '''
import json, os, sys
print(json.dumps({"cwd": os.getcwd(), "argv": sys.argv[1:], "path0": sys.path[0],
                  "marker": os.environ.get("PROBE_MARKER"), "name": __name__,
                  "file": os.path.basename(__file__), "version": VERSION,
                  "stdin": sys.stdin.read()}))
print("to stderr", file=sys.stderr)
sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
'''

LIGHTNING_LOG = '''
from pytorch_lightning.utilities import rank_zero_info
rank_zero_info("a message through the logging handler Lightning installs at import")
'''

RAISES = '''
raise ValueError("the probe's own error")
'''

WAITS = '''
import os, signal, sys, time
from pathlib import Path

def stop(signum, frame):
    Path("got_signal").write_text(str(signum))
    sys.exit(7)

signal.signal(signal.SIGTERM, stop)
Path("ready").write_text(str(os.getpid()))
time.sleep(60)
'''


@pytest.fixture(scope="module")
def server_env(tmp_path_factory):
    """The environment of this module's probes: a socket directory and server of their own."""
    directory = tmp_path_factory.mktemp("preload")
    sockets = Path("/tmp") / f"dmp-{uuid.uuid4().hex[:8]}"  # short: a socket path has a limit
    env = subprocess_env(
        DVC_STAGE="probe", DATAMAP_PRELOAD_DIR=str(sockets), DATAMAP_PRELOAD_IDLE="60",
        # part of the server's key (a PYTHON* variable): no other test's server serves us
        PYTHONDATAMAPTESTKEY=uuid.uuid4().hex)
    for name in ("DATAMAP_PRELOAD", preload.WORKER_ENV, *preload.RANK_ENV):
        env.pop(name, None)
    yield {"env": env, "sockets": sockets, "base": directory}
    preload.stop_servers(sockets)
    shutil.rmtree(sockets, ignore_errors=True)


def make_checkout(base: Path, name: str, modules: dict[str, str]) -> Path:
    """A directory with the real ``stages/__init__.py`` and the given probe modules."""
    checkout = base / name
    package = checkout / "stages"
    package.mkdir(parents=True)
    shutil.copy(ROOT / "stages" / "__init__.py", package / "__init__.py")
    for module, source in modules.items():
        (package / f"{module}.py").write_text(source)
    return checkout


def run_probe(checkout: Path, env: dict[str, str], *args: str, module: str = "probe",
              stdin: str = "", **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"stages.{module}", *args], cwd=checkout,
                          env={**env, **extra}, input=stdin, capture_output=True, text=True,
                          timeout=120)


def wait_for_server(sockets: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not list(sockets.glob("*.sock")):
        assert time.monotonic() < deadline, (
            f"no preload server came up: {[p.read_text() for p in sockets.glob('*.err')]}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def checkout(server_env):
    """A probe checkout, with the server started by its first run (which runs unserved)."""
    checkout = make_checkout(server_env["base"], "one", {
        "probe": "VERSION = 'one'\n" + PROBE, "lightning_log": LIGHTNING_LOG,
        "raises": RAISES, "waits": WAITS})
    first = run_probe(checkout, server_env["env"])
    assert first.returncode == 0, first.stderr
    wait_for_server(server_env["sockets"])
    return checkout


def test_a_served_stage_behaves_as_the_same_stage_alone(server_env, checkout):
    env, sockets = server_env["env"], server_env["sockets"]
    args = ("key=value", "+spec=ambiguous_33", "--flag")
    alone = run_probe(checkout, env, *args, stdin="piped input", DATAMAP_PRELOAD="0",
                      PROBE_MARKER="m1", PROBE_EXIT="3")
    before = len(preload.served_stages(sockets))
    through = run_probe(checkout, env, *args, stdin="piped input", PROBE_MARKER="m1",
                        PROBE_EXIT="3")
    log = preload.served_stages(sockets)[before:]
    assert [(e["module"], e["cwd"], e["exit"]) for e in log] == [
        ("stages.probe", str(checkout), 3)], "the server did not run the probe"
    assert through.returncode == alone.returncode == 3
    assert through.stderr == alone.stderr == "to stderr\n"
    assert json.loads(through.stdout) == json.loads(alone.stdout) == {
        "cwd": str(checkout), "argv": list(args), "path0": str(checkout), "marker": "m1",
        "name": "__main__", "file": "probe.py", "version": "one", "stdin": "piped input"}


def test_each_stage_imports_the_code_of_its_own_checkout(server_env, checkout):
    env, sockets = server_env["env"], server_env["sockets"]
    other = make_checkout(server_env["base"], "two", {"probe": "VERSION = 'two'\n" + PROBE})
    before = len(preload.served_stages(sockets))
    outputs = [json.loads(run_probe(c, env).stdout)["version"] for c in (checkout, other)]
    assert outputs == ["one", "two"]
    # edited between two runs: the next run has the edit
    (other / "stages" / "probe.py").write_text("VERSION = 'edited'\n" + PROBE)
    assert json.loads(run_probe(other, env).stdout)["version"] == "edited"
    assert len(preload.served_stages(sockets)) - before == 3


def test_logging_handlers_of_preloaded_libraries_write_to_the_stage(server_env, checkout):
    env = server_env["env"]
    alone = run_probe(checkout, env, module="lightning_log", DATAMAP_PRELOAD="0")
    through = run_probe(checkout, env, module="lightning_log")
    assert "a message through the logging handler" in alone.stdout + alone.stderr
    assert (through.stdout, through.stderr) == (alone.stdout, alone.stderr)


def test_an_exception_prints_its_traceback_and_exits_1(server_env, checkout):
    result = run_probe(checkout, server_env["env"], module="raises")
    assert result.returncode == 1
    assert result.stderr.rstrip().endswith("ValueError: the probe's own error")
    assert "Traceback" in result.stderr


@pytest.mark.parametrize("kill", ["SIGTERM", "SIGKILL"])
def test_a_signal_to_the_stage_process_reaches_the_stage(server_env, checkout, kill):
    """SIGTERM is forwarded; a stage process killed outright (SIGKILL) gets its stage stopped
    with SIGTERM, so nothing keeps running unseen."""
    for name in ("ready", "got_signal"):
        (checkout / name).unlink(missing_ok=True)
    before = len(preload.served_stages(server_env["sockets"]))
    process = subprocess.Popen([sys.executable, "-m", "stages.waits"], cwd=checkout,
                               env=server_env["env"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (checkout / "ready").exists():
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.05)
    assert int((checkout / "ready").read_text()) != process.pid  # it runs in the server's fork
    process.send_signal(getattr(signal, kill))
    code = process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while not (checkout / "got_signal").exists():
        assert time.monotonic() < deadline, "the stage never got the signal"
        time.sleep(0.05)
    assert (checkout / "got_signal").read_text() == str(int(signal.SIGTERM))
    if kill == "SIGTERM":
        assert code == 7  # the stage's own exit code, passed back
    while len(preload.served_stages(server_env["sockets"])) == before:  # the server saw it end
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert preload.served_stages(server_env["sockets"])[-1]["exit"] == 7


def test_the_server_is_specific_to_import_time_settings(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    one = preload.server_key()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert preload.server_key() != one  # torch's thread pool reads it at import
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("DVC_STAGE", "another@stage")
    monkeypatch.setenv("DATAMAP_PRELOAD_IDLE", "5")
    assert preload.server_key() == one  # read after the fork: no new server


@pytest.mark.parametrize(("env", "expected"), [
    ({"DVC_STAGE": "train"}, True),
    ({}, False),  # not under DVC
    ({"DVC_STAGE": "train", "DATAMAP_PRELOAD": "0"}, False),
    ({"DATAMAP_PRELOAD": "1"}, True),
    ({"DVC_STAGE": "train", "LOCAL_RANK": "1"}, False),  # a DDP rank re-launched by Lightning
    ({"DVC_STAGE": "train", "DATAMAP_PRELOAD": "1", "WORLD_SIZE": "2"}, False),
    ({"DVC_STAGE": "train", preload.WORKER_ENV: "123"}, False),  # already in the server
])
def test_when_stages_are_handed_over(env, expected):
    if expected and os.path.exists("/dev/nvidiactl") and "DATAMAP_PRELOAD" not in env:
        expected = False  # off by default where a GPU driver is loaded
    assert preload.enabled(env) is expected


@pytest.mark.parametrize(("argv", "module"), [
    (["python", "-m", "stages.retrain", "+spec=full"], "stages.retrain"),
    (["python", "-X", "importtime", "-m", "stages.retrain"], None),  # interpreter options
    (["python", "-m", "datamap.cli", "compose"], None),
    (["python", "stages/retrain.py"], None),
])
def test_only_plain_stage_commands_are_handed_over(argv, module):
    assert preload.stage_module(argv) == module


def test_stop_makes_the_server_exit_and_remove_its_socket(tmp_path):
    sockets = Path("/tmp") / f"dmp-{uuid.uuid4().hex[:8]}"
    env = subprocess_env(DVC_STAGE="probe", DATAMAP_PRELOAD_DIR=str(sockets),
                         PYTHONDATAMAPTESTKEY=uuid.uuid4().hex)
    try:
        checkout = make_checkout(tmp_path, "stop", {"probe": "VERSION = 's'\n" + PROBE})
        assert run_probe(checkout, env).returncode == 0
        wait_for_server(sockets)
        result = subprocess.run([sys.executable, "-m", "datamap.preload", "stop"], env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.stdout.strip() == "asked 1 preload server(s) to stop"
        deadline = time.monotonic() + 30
        while list(sockets.glob("*.sock")):
            assert time.monotonic() < deadline, "the server kept its socket"
            time.sleep(0.1)
        # with no server, the next stage runs on its own (and starts a new server)
        ran = run_probe(checkout, env, PROBE_EXIT="4")
        assert ran.returncode == 4 and json.loads(ran.stdout)["version"] == "s"
        wait_for_server(sockets)
    finally:
        preload.stop_servers(sockets)
        shutil.rmtree(sockets, ignore_errors=True)


def test_an_idle_server_exits_after_its_last_stage(tmp_path):
    sockets = Path("/tmp") / f"dmp-{uuid.uuid4().hex[:8]}"
    env = subprocess_env(DVC_STAGE="probe", DATAMAP_PRELOAD_DIR=str(sockets),
                         DATAMAP_PRELOAD_IDLE="10", PYTHONDATAMAPTESTKEY=uuid.uuid4().hex)
    try:
        checkout = make_checkout(tmp_path, "idle", {"probe": "VERSION = 'i'\n" + PROBE})
        assert run_probe(checkout, env).returncode == 0  # starts the server
        wait_for_server(sockets)
        assert run_probe(checkout, env, PROBE_EXIT="5").returncode == 5
        assert [e["exit"] for e in preload.served_stages(sockets)] == [5]
        deadline = time.monotonic() + 60
        while list(sockets.glob("*.sock")):  # 10 s after that stage ended, it is gone
            assert time.monotonic() < deadline, "the idle server kept running"
            time.sleep(0.2)
    finally:
        preload.stop_servers(sockets)
        shutil.rmtree(sockets, ignore_errors=True)

"""Stage processes that start in milliseconds: a server that has imported the heavy libraries
forks them.

DVC runs every stage as a fresh ``python -m stages.X`` process, one after another, and a stage
that trains or evaluates spends about 6 s importing torch, Lightning and torchmetrics before its
first line of work: a selection grid of 18 specs pays that 36 times, more than its 54 fits take.
So when a stage command runs under DVC, ``stages/__init__.py`` calls :func:`hand_over`, which
passes the command to a *preload server*: a background process that imported those libraries
once. The server forks; the fork takes the stage process's working directory, environment,
arguments and standard streams (the file descriptors themselves, passed over a Unix socket) and
runs the stage module as ``__main__``; the stage process waits, forwards the signals it gets
(Ctrl-C, termination) and exits with the fork's exit status. DVC sees an ordinary process with
its usual output and exit code, and the stage's results are the same bytes either way (a test
runs the pipeline both ways).

- The first stage process that finds no server starts one in the background and runs its own
  stage the ordinary way; the server serves the stages after it.
- Nothing of ``datamap`` or ``stages`` stays imported in a fork: each stage imports them from its
  own checkout, so edits count at once. Only third-party libraries (:data:`PRELOAD`) are shared.
- A server serves one interpreter, one ``sys.path`` (with the directories' modification times, so
  installing a package starts a new server), the environment variables that libraries read when
  they are imported (:data:`IMPORT_TIME_ENV`), and this module's own version; anything else gets
  its own server. A server exits after ``DATAMAP_PRELOAD_IDLE`` seconds without a stage (default
  120) or on ``python -m datamap.preload stop``.
- Off with ``DATAMAP_PRELOAD=0``; off outside DVC (no ``DVC_STAGE``), under interpreter options
  (``python -X ... -m``), in the processes of a multi-process (DDP) run, and on machines with an
  NVIDIA driver (``/dev/nvidiactl``: a fork of a process that loaded the CUDA driver cannot use
  the GPU safely) unless ``DATAMAP_PRELOAD=1`` forces it; Linux only.

The server writes one line per stage it ran to ``<socket>.log`` next to its socket (in
``DATAMAP_PRELOAD_DIR``, by default ``$TMPDIR/datamap-preload-<uid>/``), which is also how the
tests know it served them; what it prints itself goes to ``<socket>.err``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: Imported once by the server: what the stage scripts spend their start-up on.
PRELOAD = ("numpy", "pandas", "pyarrow.parquet", "omegaconf", "hydra", "hydra.utils",
           "torch", "torchmetrics", "pytorch_lightning", "sklearn.metrics")

#: Environment variables (names or prefixes ending in ``_``) that libraries read when they are
#: imported (thread pools, CUDA, locale, Python's own): a server serves one set of their values.
IMPORT_TIME_ENV = ("OMP_", "MKL_", "OPENBLAS_", "KMP_", "GOMP_", "CUDA_", "NVIDIA_", "TORCH",
                   "PYTORCH_", "PYTHON", "LD_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "PL_",
                   "LIGHTNING_", "LANG", "LC_", "TZ")

#: Set in the processes of a multi-process run (Lightning's DDP re-launches the stage command).
RANK_ENV = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK")

#: What a stage process forwards to its stage (and what the stage gets back as default handling).
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)

#: Bumped when the wire protocol changes (it is part of the server's key as well).
PROTOCOL = 1

_HEADER = struct.Struct("!I")
#: Set in the environment of a stage the server runs, so that it does not hand over again.
WORKER_ENV = "DATAMAP_PRELOAD_WORKER"


def enabled(environ: os._Environ | dict[str, str] | None = None) -> bool:
    """Whether a stage process with this environment hands its command to a server."""
    env = os.environ if environ is None else environ
    choice = env.get("DATAMAP_PRELOAD", "").strip().lower()
    if choice in ("0", "false", "no", "off") or env.get(WORKER_ENV):
        return False
    if not sys.platform.startswith("linux") or not hasattr(socket, "send_fds"):
        return False
    if any(name in env for name in RANK_ENV):
        return False
    if choice in ("1", "true", "yes", "on"):
        return True
    return bool(env.get("DVC_STAGE")) and not os.path.exists("/dev/nvidiactl")


def stage_module(orig_argv: list[str]) -> str | None:
    """``stages.X`` when the interpreter ran as ``python -m stages.X ...`` with no options."""
    if len(orig_argv) >= 3 and orig_argv[1] == "-m" and orig_argv[2].startswith("stages."):
        return orig_argv[2]
    return None


def server_key(environ: os._Environ | dict[str, str] | None = None) -> str:
    """What a server is specific to: interpreter, import path, import-time environment."""
    env = os.environ if environ is None else environ
    paths = []
    for entry in sys.path[1:]:  # [0] is the working directory: each stage sets its own
        with contextlib.suppress(OSError):
            paths.append((entry, os.stat(entry or ".").st_mtime_ns))
    source = os.stat(__file__)
    selected = sorted((k, v) for k, v in env.items()
                      if k.startswith(IMPORT_TIME_ENV) and not k.startswith("DATAMAP_PRELOAD"))
    blob = json.dumps([PROTOCOL, sys.executable, sys.version, paths, selected,
                       source.st_mtime_ns, source.st_size])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def socket_dir() -> Path:
    """Where the servers' sockets are: ``DATAMAP_PRELOAD_DIR`` or a directory of this user's
    under the temporary directory."""
    chosen = os.environ.get("DATAMAP_PRELOAD_DIR")
    if chosen:
        return Path(chosen)
    return Path(tempfile.gettempdir()) / f"datamap-preload-{os.getuid()}"


def socket_path(key: str) -> Path:
    return socket_dir() / f"{key}.sock"


def idle_seconds() -> float:
    return float(os.environ.get("DATAMAP_PRELOAD_IDLE", "120"))


# ---------------------------------------------------------------- the stage process (client)


def hand_over(orig_argv: list[str] | None = None) -> None:
    """Run this ``python -m stages.X`` process's stage in a fork of the preload server and exit
    with its status; return (to run the stage here) when preloading is off or no server is up
    yet (then start one for the stages that follow)."""
    module = stage_module(list(sys.orig_argv if orig_argv is None else orig_argv))
    if module is None or not enabled():
        return
    path = socket_path(server_key())
    if len(str(path)) > 100:  # longer than a Unix socket address may be
        return
    connection = _connect(path)
    if connection is None:
        start_server(path)
        return
    code = _delegate(connection, module)
    if code is None:  # the server closed before it started the stage: run it here
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _connect(path: Path) -> socket.socket | None:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(str(path))
    except OSError:
        client.close()
        return None
    return client


def _delegate(connection: socket.socket, module: str) -> int | None:
    """Send the command and standard streams, forward signals, return the stage's exit code
    (None when the server did not start the stage: it was exiting)."""
    request = json.dumps({
        "module": module,
        "argv": sys.argv[1:],
        "orig_argv": list(sys.orig_argv),
        "cwd": os.getcwd(),
        "env": dict(os.environ),
    }).encode()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        socket.send_fds(connection, [_HEADER.pack(len(request))], [0, 1, 2])
        connection.sendall(request)
        started = _read_line(connection)
    except OSError:
        started = b""
    if not started.startswith(b"started "):
        connection.close()
        return None

    def forward(signum: int, frame: Any) -> None:
        with contextlib.suppress(OSError):
            connection.sendall(f"signal {signum}\n".encode())

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    try:
        reply = _read_line(connection)
    except OSError:
        reply = b""
    if not reply.startswith(b"exit "):
        print("datamap preload: the server went away before the stage finished",
              file=sys.stderr)
        return 1
    code = int(reply.split()[1])
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell says


def _read_line(connection: socket.socket) -> bytes:
    """One reply line of the server, byte by byte (nothing after it may be consumed)."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = connection.recv(1)
        if not chunk:
            break
        line += chunk
    return line


def start_server(path: Path) -> None:
    """Start a server for ``path`` in the background (it exits at once when one is starting)."""
    import subprocess

    directory = path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(f"{path}.err", "ab") as errors:
        subprocess.Popen(
            [sys.executable, "-m", "datamap.preload", "serve", str(path)],
            cwd=directory, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=errors, start_new_session=True, close_fds=True,
        )


# ------------------------------------------------------------------------------ the server


def serve(path: Path) -> None:
    """Import :data:`PRELOAD`, then fork one handler per stage until idle for a while."""
    import fcntl
    import importlib

    lock = open(f"{path}.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another server for this key is starting or running
    # `python -m` put the server's working directory (the socket directory) first; the stages
    # import from theirs instead
    if sys.path and Path(sys.path[0] or ".").resolve() == path.parent.resolve():
        del sys.path[0]
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    for name in [m for m in sys.modules if m == "datamap" or m.startswith("datamap.")]:
        if name != __name__:
            del sys.modules[name]  # a stage imports its own checkout's datamap

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = path.with_suffix(f".{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        staging.unlink()
    old_umask = os.umask(0o077)
    try:
        listener.bind(str(staging))
    finally:
        os.umask(old_umask)
    listener.listen(16)
    os.replace(staging, path)  # clients connect only once everything is imported
    inode = path.stat().st_ino
    listener.settimeout(1.0)
    last_work = time.monotonic()
    children: set[int] = set()
    try:
        while True:
            children -= _reaped(children)
            if children:
                last_work = time.monotonic()
            elif time.monotonic() - last_work > idle_seconds():
                break
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                connection.settimeout(5.0)
                request, fds = _receive(connection)
                connection.settimeout(None)
            except (OSError, ValueError):
                connection.close()
                continue
            if request is None:  # python -m datamap.preload stop
                connection.close()
                break
            pid = os.fork()
            if pid == 0:
                listener.close()
                lock.close()
                code = 1
                try:
                    code = _handle(connection, request, fds, path)
                finally:
                    os._exit(code)
            for fd in fds:
                os.close(fd)
            connection.close()
            children.add(pid)
            last_work = time.monotonic()
    finally:
        with contextlib.suppress(OSError):
            if path.stat().st_ino == inode:  # not a newer server's socket
                path.unlink()
        listener.close()


def _reaped(children: set[int]) -> set[int]:
    done = set()
    for pid in children:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                done.add(pid)
        except ChildProcessError:  # already reaped
            done.add(pid)
    return done


def _receive(connection: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """A stage request (its command and the three standard streams' descriptors), or
    (None, []) for a stop request."""
    message, fds, _, _ = socket.recv_fds(connection, _HEADER.size, 3)
    if message == b"stop" and not fds:
        return None, []
    try:
        if len(message) != _HEADER.size or len(fds) != 3:
            raise ConnectionError("malformed request")
        (size,) = _HEADER.unpack(message)
        payload = b""
        while len(payload) < size:
            chunk = connection.recv(size - len(payload))
            if not chunk:
                raise ConnectionError("request cut short")
            payload += chunk
        return json.loads(payload), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def served_stages(directory: Path | None = None) -> list[dict[str, Any]]:
    """What the servers of ``directory`` (default :func:`socket_dir`) say they ran: one entry per
    stage (module, cwd, DVC stage name, exit code, seconds), each log's oldest first."""
    return [json.loads(line) for log in sorted((directory or socket_dir()).glob("*.sock.log"))
            for line in log.read_text().splitlines()]


def _handle(connection: socket.socket, request: dict[str, Any], fds: list[int],
            path: Path) -> int:
    """One stage: fork the stage process, relay signals to it, report how it ended."""
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        connection.close()
        _run_stage(request, fds)  # never returns
    for fd in fds:
        os.close(fd)
    with contextlib.suppress(OSError):
        connection.sendall(f"started {pid}\n".encode())
    status = _wait_relaying_signals(connection, pid)
    code = os.waitstatus_to_exitcode(status)
    # the log line first: when the stage process exits, its line is there
    with contextlib.suppress(OSError), open(f"{path}.log", "a") as log:
        log.write(json.dumps({"module": request["module"], "cwd": request["cwd"],
                              "stage": request["env"].get("DVC_STAGE"), "exit": code,
                              "seconds": round(time.monotonic() - started, 3)}) + "\n")
    with contextlib.suppress(OSError):
        connection.sendall(f"exit {code}\n".encode())
    return 0


def _wait_relaying_signals(connection: socket.socket, pid: int) -> int:
    import select

    try:
        exited = os.pidfd_open(pid)
    except (AttributeError, OSError):
        exited = None
    buffer = b""
    client_gone = False
    while True:
        watched = ([] if client_gone else [connection]) + ([exited] if exited is not None else [])
        # without a pidfd (kernels before 5.3), poll for the stage's end
        ready, _, _ = select.select(watched, [], [], None if exited is not None else 0.05)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if exited is not None:
                os.close(exited)
            return status
        if connection in ready:
            chunk = connection.recv(256)
            if not chunk:  # the stage process is gone (killed): stop its stage too
                _signal_group(pid, signal.SIGTERM)
                client_gone = True
                continue
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.startswith(b"signal "):
                    _signal_group(pid, int(line.split()[1]))


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _run_stage(request: dict[str, Any], fds: list[int]) -> None:
    """In the fork: become the stage process and run the stage module as ``__main__``."""
    import atexit
    import runpy
    import threading
    import traceback

    code = 1
    try:
        os.setpgid(0, 0)  # its own process group: signals reach its DataLoader workers too
        for target, fd in zip((0, 1, 2), fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        _reopen_standard_streams()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ[WORKER_ENV] = str(os.getpid())
        for signum in FORWARDED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.path.insert(0, request["cwd"])  # as `python -m` does
        sys.argv = ["-m", *request["argv"]]
        sys.orig_argv = list(request["orig_argv"])
        try:
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit_:
            code = _exit_code(exit_.code)
        except KeyboardInterrupt:
            traceback.print_exc()
            code = 128 + signal.SIGINT
        except BaseException:  # noqa: BLE001 - what the interpreter would print and exit 1 on
            traceback.print_exc()
            code = 1
        # what the interpreter does at exit: wait for non-daemon threads, run atexit handlers
        with contextlib.suppress(Exception):
            threading._shutdown()  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001 - setting up the stage failed: say why
        with contextlib.suppress(Exception):
            print("datamap preload: could not start the stage in the server:", file=sys.stderr)
            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _exit_code(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


def _reopen_standard_streams() -> None:
    """New ``sys.std*`` on the stage process's descriptors, and logging handlers that wrote to
    the server's (libraries add them at import) moved to the new ones."""
    import logging

    old = {id(sys.stdout): "stdout", id(sys.stderr): "stderr",
           id(sys.__stdout__): "stdout", id(sys.__stderr__): "stderr"}
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"

    def text(fd: int, mode: str, errors: str | None, line_buffering: bool) -> io.TextIOWrapper:
        raw = io.FileIO(fd, mode, closefd=False)
        buffered = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
        return io.TextIOWrapper(buffered, encoding=encoding, errors=errors,
                                line_buffering=line_buffering, write_through=unbuffered)

    sys.stdin = sys.__stdin__ = text(0, "r", getattr(sys.stdin, "errors", None), False)
    sys.stdout = sys.__stdout__ = text(1, "w", getattr(sys.stdout, "errors", None),
                                       os.isatty(1))
    sys.stderr = sys.__stderr__ = text(2, "w", "backslashreplace", True)
    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict
                                       .values() if isinstance(logger, logging.Logger)]
    for logger in loggers:
        for handler in logger.handlers:
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.StreamHandler) and id(stream) in old:
                handler.setStream(getattr(sys, old[id(stream)]))


# ------------------------------------------------------------------------------ management


def stop_servers(directory: Path | None = None) -> int:
    """Ask every server of this user to exit; how many were asked."""
    asked = 0
    for path in sorted((directory or socket_dir()).glob("*.sock")):
        connection = _connect(path)
        if connection is None:
            continue
        with connection:
            socket.send_fds(connection, [b"stop"], [])
        asked += 1
    return asked


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["serve"] and len(args) == 2:
        serve(Path(args[1]))
    elif args == ["stop"]:
        print(f"asked {stop_servers()} preload server(s) to stop")
    else:
        sys.exit("usage: python -m datamap.preload stop")


if __name__ == "__main__":
    main()

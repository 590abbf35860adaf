"""A warm worker for local runs: jobs fork from a process that has already imported torch.

Every rule runs ``dicap <job>``, and a job that touches CLIP or the diffusion model spends
about 5 s importing torch, torchvision, open_clip and diffusers before its first line of work;
most embedded-suite jobs then work for a second or two.  A local ``snakemake`` run therefore
starts one :func:`serve` process (the Snakefile's ``onstart``), which imports those libraries
once and listens on a Unix socket named by ``$DICAP_WORKER``.  ``dicap`` then hands its
command line, working directory, environment and standard streams to that process
(:func:`delegate`), which forks a child to run the job exactly as ``dicap`` would have, and
sends back the job's exit status.  The job's output goes to the job's own log file (the
child writes to the client's file descriptors), and its results are byte-identical: the same
code runs with the same arguments and seeds; only the imports were done earlier.

Nothing depends on the worker being there: with no ``$DICAP_WORKER``, no socket or a worker
that does not answer, ``dicap`` runs the job in its own process.  Cluster jobs never use it
(``onstart`` runs only for local execution).  ``DICAP_WARM=0`` switches it off, e.g. to have
Snakemake's ``benchmark:`` files measure each job's memory: with the worker they see the
client process only.

The child is forked before any computation: the server imports, it never runs a tensor op,
so no thread pool exists to be broken by ``fork``, and CUDA is never initialised in it.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

SOCKET_ENV = "DICAP_WORKER"  # where the warm worker listens, set for the jobs of a local run
SWITCH_ENV = "DICAP_WARM"  # "0" runs every job in its own process
# What the embedded suite's jobs import; each failed import is skipped (the job then imports it).
PRELOAD = (
    "numpy", "pandas", "torch", "torchvision", "open_clip", "timm", "safetensors.torch",
    "diffusers.models.unets.unet_2d", "diffusers.schedulers.scheduling_ddim", "PIL.Image", "tqdm",
)
LOG = Path("logs/worker.log")  # the server's own output, in the run's working directory
_HEADER = struct.Struct("!Q")  # request length, sent with the three standard file descriptors
_STATUS = struct.Struct("!i")  # the job's exit status
_POLL_S = 1.0  # how often the server checks on its parent and reaps finished children


def enabled() -> bool:
    """Whether warm jobs are wanted at all (``DICAP_WARM`` is not "0")."""
    return os.environ.get(SWITCH_ENV) != "0"


def delegate(argv: list[str]) -> int | None:
    """Run ``dicap argv`` in the warm worker; ``None`` when there is none to run it."""
    path = os.environ.get(SOCKET_ENV)
    if not path or not enabled():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:  # not started yet, already gone, or a stale path: run here
        sock.close()
        return None
    with sock:
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        socket.send_fds(sock, [_HEADER.pack(len(request))], [0, 1, 2])
        sock.sendall(request)
        status = _recv_exact(sock, _STATUS.size)
    if status is None:
        print(f"dicap: the warm worker at {path} ended the job without an exit status", file=sys.stderr)
        return 1
    return _STATUS.unpack(status)[0]


def serve(path: str | Path, run: Callable[[list[str]], int], idle_timeout: float = 3600.0, parent: int | None = None) -> None:
    """Import :data:`PRELOAD`, then run each request in a forked child until told to stop.

    The server stops on SIGTERM, when ``parent`` (the ``snakemake`` that started it; by
    default the process's parent at start) is no longer its parent, or after
    ``idle_timeout`` seconds without a request; it removes its socket on the way out.  The
    pid is passed by :func:`launch` rather than read after the imports: a short run can end
    within them, and an orphan that recorded its new parent would wait out the idle timeout.
    """
    parent = os.getppid() if parent is None else parent
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    path = str(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.settimeout(_POLL_S)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        listener.bind(path)
        listener.listen(64)
        last = time.monotonic()
        while not stopping.is_set() and os.getppid() == parent and time.monotonic() - last < idle_timeout:
            _reap()
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            last = time.monotonic()
            _fork_job(conn, listener, run)
    finally:
        listener.close()
        Path(path).unlink(missing_ok=True)


def launch() -> subprocess.Popen | None:
    """Start a worker for this run's jobs (the Snakefile's ``onstart``); ``None`` when switched off.

    It returns at once: the worker listens only once its imports are done, and the jobs that
    start before that run in their own processes.
    """
    if not enabled():
        return None
    path = str(Path(tempfile.mkdtemp(prefix="dicap-")) / "worker.sock")  # short: the kernel allows ~100 bytes
    env = {k: v for k, v in os.environ.items() if k != SOCKET_ENV}
    code = "import sys; from dicap.cli import main; sys.exit(main())"
    LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(LOG, "ab") as log:
        command = [sys.executable, "-c", code, "serve", "--socket", path, "--parent", str(os.getpid())]
        proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    os.environ[SOCKET_ENV] = path
    return proc


def stop(proc: subprocess.Popen | None) -> None:
    """End a worker started by :func:`launch` (``onsuccess`` / ``onerror``) and forget its socket."""
    path = os.environ.pop(SOCKET_ENV, None)
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if path:
        shutil.rmtree(Path(path).parent, ignore_errors=True)


def _fork_job(conn: socket.socket, listener: socket.socket, run: Callable[[list[str]], int]) -> None:
    """Read one request and fork its job; the parent keeps nothing of it."""
    try:
        header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
        body = _recv_exact(conn, _HEADER.unpack(header)[0]) if len(header) == _HEADER.size and len(fds) == 3 else None
    except OSError:
        body, fds = None, []
    if body is None:  # a broken request: the client sees no status and says so
        for fd in fds:
            os.close(fd)
        conn.close()
        return
    if os.fork() == 0:
        listener.close()
        _run_child(conn, fds, json.loads(body), run)
    for fd in fds:
        os.close(fd)
    conn.close()


def _run_child(conn: socket.socket, fds: list[int], request: dict, run: Callable[[list[str]], int]) -> None:
    """In the forked child: become the client's job, run it, send its status and exit."""
    status = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["dicap", *request["argv"]]
        threading.Thread(target=_exit_when_client_goes, args=(conn,), daemon=True).start()
        status = run(request["argv"])
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # the job's own traceback, in the job's log, as a crash would print it
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        try:
            conn.sendall(_STATUS.pack(status))
        except OSError:
            pass
        os._exit(status)


def _exit_when_client_goes(conn: socket.socket) -> None:
    """A job whose ``dicap`` was killed (Snakemake stopped it) must stop too."""
    try:
        while conn.recv(1):
            pass
    except OSError:
        pass
    os._exit(1)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    """``n`` bytes, or ``None`` if the peer closed first."""
    chunks, left = [], n
    while left:
        chunk = sock.recv(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _reap() -> None:
    """Collect finished children so none lingers as a zombie."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass

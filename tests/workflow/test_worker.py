"""The warm worker: a job run through it behaves as the same job run in its own process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dicap import worker
from snakemake_runner import REPO

DICAP = [sys.executable, "-c", "import sys; from dicap.cli import main; sys.exit(main())"]


def start_server(path: Path, idle_timeout: float = 120.0) -> subprocess.Popen:
    """``dicap serve`` on ``path``; returns once it listens (its imports take a few seconds)."""
    proc = subprocess.Popen([*DICAP, "serve", "--socket", str(path), "--idle-timeout", str(idle_timeout)])
    deadline = time.monotonic() + 120
    while not path.exists():
        assert proc.poll() is None, "the worker exited before listening"
        assert time.monotonic() < deadline, "the worker did not listen within 120 s"
        time.sleep(0.1)
    return proc


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    path = tmp_path_factory.mktemp("worker") / "w.sock"
    proc = start_server(path)
    yield path
    proc.terminate()
    proc.wait(timeout=30)


def dicap(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in (worker.SOCKET_ENV, worker.SWITCH_ENV)}
    return subprocess.run([*DICAP, *args], cwd=cwd, env={**full, **env}, capture_output=True, text=True, timeout=120)


def last_line(stderr: str) -> str:
    """The one-line error, without the log's timestamp."""
    lines = stderr.splitlines()
    return lines[-1].split(" ", 2)[-1] if lines else ""


def test_a_job_through_the_worker_matches_the_job_in_its_own_process(warm, tmp_path):
    """Same exit status, same output, in the client's working directory - success and failure -
    and the job really ran in the worker (a child of the server, not of the client)."""
    good = tmp_path / "good.yaml"
    good.write_text("seeds: [1, 2]\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seeds: [one]\n")
    for args in (["validate_config", "good.yaml"], ["validate-config", "bad.yaml"], ["no_such_job"]):
        cold = dicap(args, tmp_path)
        hot = dicap(args, tmp_path, DICAP_WORKER=str(warm))
        assert (hot.returncode, hot.stdout) == (cold.returncode, cold.stdout), args
        assert last_line(hot.stderr) == last_line(cold.stderr), args
    assert dicap(["validate_config", "bad.yaml"], tmp_path).returncode == 1
    # delegate() answers None when it did not hand the job over: 3 would mean "ran nowhere".
    probe = "import sys; from dicap import worker; status = worker.delegate(sys.argv[1:]); sys.exit(3 if status is None else status)"
    client = subprocess.run([sys.executable, "-c", probe, "validate_config", str(good)], capture_output=True,
                            text=True, env={**os.environ, worker.SOCKET_ENV: str(warm)}, timeout=120)
    assert client.returncode == 0 and f"{good}: valid" in client.stdout


@pytest.mark.parametrize("env", [{}, {"DICAP_WORKER": "/nonexistent/w.sock"}, {"DICAP_WARM": "0"}])
def test_without_a_worker_the_job_runs_in_its_own_process(monkeypatch, tmp_path, env):
    monkeypatch.delenv(worker.SOCKET_ENV, raising=False)
    monkeypatch.delenv(worker.SWITCH_ENV, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if env.get("DICAP_WARM") == "0":
        monkeypatch.setenv(worker.SOCKET_ENV, str(tmp_path / "w.sock"))
    assert worker.delegate(["validate_config", "x.yaml"]) is None
    result = dicap(["validate_config", str(REPO / "config.yaml")], tmp_path, **env)
    assert result.returncode == 0 and "valid" in result.stdout


def test_a_stale_socket_file_falls_back(tmp_path, monkeypatch):
    """A socket left by a killed worker refuses connections: the job must still run."""
    import socket

    path = tmp_path / "w.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # the file stays, nobody listens
    monkeypatch.setenv(worker.SOCKET_ENV, str(path))
    monkeypatch.delenv(worker.SWITCH_ENV, raising=False)
    assert worker.delegate(["validate_config", "x.yaml"]) is None


def test_the_worker_stops_on_sigterm_and_when_idle_and_removes_its_socket(tmp_path):
    path = tmp_path / "a.sock"
    proc = start_server(path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0 and not path.exists()
    path = tmp_path / "b.sock"
    proc = start_server(path, idle_timeout=1)
    assert proc.wait(timeout=30) == 0 and not path.exists()


def test_a_worker_whose_run_ended_during_its_imports_exits_at_once(tmp_path):
    """``--parent`` names the snakemake that launched it: if that is not its parent any more
    (the run ended while the worker was still importing), it must not wait out the idle hour."""
    path = tmp_path / "w.sock"
    proc = subprocess.Popen([*DICAP, "serve", "--socket", str(path), "--parent", "1"])
    assert proc.wait(timeout=120) == 0 and not path.exists()


def test_a_killed_client_stops_its_job(warm, tmp_path):
    """Snakemake stops a job by killing ``dicap``: the forked job must not run on alone."""
    probe = ("import sys; from dicap import worker; "
             "sys.exit(worker.delegate(['serve', '--socket', sys.argv[1], '--idle-timeout', '600']))")
    inner = tmp_path / "inner.sock"  # a job that never ends by itself: a nested worker
    client = subprocess.Popen([sys.executable, "-c", probe, str(inner)], env={**os.environ, worker.SOCKET_ENV: str(warm)})
    deadline = time.monotonic() + 120
    while not inner.exists():
        assert time.monotonic() < deadline and client.poll() is None
        time.sleep(0.1)
    client.kill()
    client.wait()
    deadline = time.monotonic() + 30
    while inner.exists() and time.monotonic() < deadline:  # os._exit skips the cleanup; connect instead
        import socket

        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(inner))
        except OSError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the job of a killed client still answers")


def test_launch_points_the_jobs_at_the_worker_and_stop_forgets_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(worker.SOCKET_ENV, raising=False)
    monkeypatch.setenv(worker.SWITCH_ENV, "0")
    assert worker.launch() is None and worker.SOCKET_ENV not in os.environ
    monkeypatch.delenv(worker.SWITCH_ENV)
    proc = worker.launch()
    path = Path(os.environ[worker.SOCKET_ENV])
    try:
        deadline = time.monotonic() + 120
        while not path.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        worker.stop(proc)
    assert proc.returncode is not None and not path.parent.exists() and worker.SOCKET_ENV not in os.environ
    assert (tmp_path / "logs" / "worker.log").exists()

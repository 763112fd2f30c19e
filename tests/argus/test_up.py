"""`argus up` on a clean data dir with no services configured."""

import json
import os
import re
import signal
import subprocess
import sys
from contextlib import contextmanager, suppress

import psutil
import pytest

from tests.support.http import get, log_in
from tests.support.processes import ROOT, free_port, wait_until

pytestmark = pytest.mark.slow

CLEARED = [
    "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ARGUS_ENCRYPTION_KEY", "ALLOWED_HOSTS",
    "DJANGO_SETTINGS_MODULE", "ARGUS_SECURE", "DEBUG",
]  # fmt: skip


def start_up(data_dir, port, log):
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update(ARGUS_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "argus", "up", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def healthy(port):
    status, body = get(f"http://127.0.0.1:{port}/health/")
    return status == 200 and json.loads(body)


def descendants(pid):
    return psutil.Process(pid).children(recursive=True)


def assert_all_gone(processes):
    def gone(process):
        try:
            return process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_until(lambda: all(gone(p) for p in processes), 10, "children to exit")


@contextmanager
def running_up(tmp_path):
    """`argus up` on a fresh data dir, once /health/ is 200; killed if still running."""
    port = free_port()
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        up = start_up(tmp_path / "var", port, log)
    try:
        wait_until(lambda: up.poll() is not None or healthy(port), 120, "health 200")
        assert up.poll() is None, log_path.read_text()
        yield up, port, log_path
    finally:
        if up.poll() is None:
            leftovers = descendants(up.pid)
            up.terminate()
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                up.kill()
                for process in leftovers:
                    with suppress(psutil.NoSuchProcess):
                        process.kill()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_up_starts_everything_and_stops_cleanly(tmp_path, stop_signal):
    data_dir = tmp_path / "var"
    with running_up(tmp_path) as (up, port, log_path):
        report = healthy(port)
        assert report["components"]["worker"]["status"] == "up"
        assert report["components"]["beat"]["status"] == "up"

        output = wait_until(
            lambda: "Log in as" in log_path.read_text() and log_path.read_text(), 30, "banner"
        )
        assert f"Argus is running at http://127.0.0.1:{port}/" in output
        email = re.search(r"Log in as (\S+)", output).group(1)
        password = re.search(r"password: (\S+)", output).group(1)
        assert (data_dir / "demo-login.txt").read_text().split() == [email, password]

        status, url, page = log_in(f"http://127.0.0.1:{port}", email, password)
        assert status == 200
        assert url == f"http://127.0.0.1:{port}/"
        assert "Demo" in page

        children = descendants(up.pid)
        names = " ".join(" ".join(p.cmdline()) for p in children)
        for part in ("valkey-server", "argus web", "argus worker", "argus beat"):
            assert part in names
        assert oct(data_dir.stat().st_mode & 0o777) == "0o700"
        up.send_signal(stop_signal)
        assert up.wait(60) == 0, log_path.read_text()
        assert_all_gone(children)
        assert "Argus stopped." in log_path.read_text()


def test_up_exits_non_zero_when_a_child_dies(tmp_path):
    with running_up(tmp_path) as (up, _port, log_path):
        children = descendants(up.pid)
        [worker] = [p for p in children if "argus worker" in " ".join(p.cmdline())
                    and p.ppid() == up.pid]  # fmt: skip
        worker.kill()
        assert up.wait(60) != 0
        output = log_path.read_text()
        assert "the worker process exited with code -9; stopping Argus" in output
        assert_all_gone(children)


def test_children_die_with_a_killed_supervisor(tmp_path):
    with running_up(tmp_path) as (up, _port, _log_path):
        children = descendants(up.pid)
        up.kill()
        up.wait(10)
        assert_all_gone(children)


def test_up_refuses_a_busy_port(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k not in CLEARED}
        env["ARGUS_DATA_DIR"] = str(tmp_path / "var")
        result = subprocess.run(
            [sys.executable, "-m", "argus", "up", "--port", str(port), "--no-demo"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "--port" in result.stderr


def test_port_out_of_range_is_refused(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env["ARGUS_DATA_DIR"] = str(tmp_path / "var")
    result = subprocess.run(
        [sys.executable, "-m", "argus", "up", "--port", "70000"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "--port must be between 1 and 65535" in result.stderr

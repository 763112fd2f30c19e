"""`argus up` on a clean data dir with no services configured."""

import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import psutil
import pytest

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


def get(url, opener=None):
    opener = opener or urllib.request.build_opener()
    try:
        with opener.open(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return None, ""


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


def log_in(port, email, password):
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    status, page = get(f"http://127.0.0.1:{port}/accounts/login/", opener)
    assert status == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    data = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": token, "username": email, "password": password}
    ).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/accounts/login/",
        data=data,
        headers={"Referer": f"http://127.0.0.1:{port}/accounts/login/"},
    )
    with opener.open(request, timeout=10) as response:
        return response.status, response.geturl(), response.read().decode()


def test_up_starts_everything_and_stops_cleanly(tmp_path):
    data_dir = tmp_path / "var"
    port = free_port()
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        up = start_up(data_dir, port, log)
    try:
        report = wait_until(
            lambda: (up.poll() is None and healthy(port)) or up.poll() is not None,
            120,
            "health 200",
        )
        assert up.poll() is None, log_path.read_text()
        assert report["components"]["worker"]["status"] == "up"
        assert report["components"]["beat"]["status"] == "up"

        output = wait_until(
            lambda: "Log in as" in log_path.read_text() and log_path.read_text(), 30, "banner"
        )
        assert f"Argus is running at http://127.0.0.1:{port}/" in output
        email = re.search(r"Log in as (\S+)", output).group(1)
        password = re.search(r"password: (\S+)", output).group(1)
        assert (data_dir / "demo-login.txt").read_text().split() == [email, password]

        status, url, page = log_in(port, email, password)
        assert status == 200
        assert url == f"http://127.0.0.1:{port}/"
        assert "Demo" in page

        children = descendants(up.pid)
        names = " ".join(" ".join(p.cmdline()) for p in children)
        for part in ("valkey-server", "argus web", "argus worker", "argus beat"):
            assert part in names
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0, log_path.read_text()
        assert_all_gone(children)
        assert "Argus stopped." in log_path.read_text()
    finally:
        if up.poll() is None:
            up.kill()


def test_up_exits_non_zero_when_a_child_dies(tmp_path):
    data_dir = tmp_path / "var"
    port = free_port()
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        up = start_up(data_dir, port, log)
    try:
        wait_until(lambda: healthy(port) or up.poll() is not None, 120, "health 200")
        assert up.poll() is None, log_path.read_text()
        children = descendants(up.pid)
        [worker] = [p for p in children if "argus worker" in " ".join(p.cmdline())
                    and p.ppid() == up.pid]  # fmt: skip
        worker.kill()
        assert up.wait(60) != 0
        output = log_path.read_text()
        assert "the worker process exited with code -9; stopping Argus" in output
        assert_all_gone(children)
    finally:
        if up.poll() is None:
            up.kill()


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

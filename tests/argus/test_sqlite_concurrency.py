"""Embedded SQLite: web and worker writing at once never hit "database is locked"."""

import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from tests.support import processes
from tests.support.celery_tasks import write_rows
from tests.support.http import log_in

pytestmark = pytest.mark.slow

SECONDS = 4
EMAIL, PASSWORD = "writer@example.test", "a long enough password"


def log_in_repeatedly(port, until, results):
    """Each login writes: a session row and the user's last_login."""
    while time.monotonic() < until:
        try:
            _status, url, _body = log_in(f"http://127.0.0.1:{port}", EMAIL, PASSWORD)
            results.append(url.endswith(f":{port}/"))
        except Exception as exc:  # recorded, asserted below
            results.append(repr(exc))


def test_web_and_worker_write_at_once(tmp_path):
    database = tmp_path / "concurrent.sqlite3"
    env = processes.child_env(
        DATABASE_URL=f"sqlite:///{database}",
        DJANGO_SUPERUSER_EMAIL=EMAIL,
        DJANGO_SUPERUSER_PASSWORD=PASSWORD,
    )
    for command in (["migrate", "--noinput"], ["createsuperuser", "--noinput"]):
        subprocess.run(
            [sys.executable, "-m", "argus", *command], env=env, cwd=processes.ROOT, check=True,
            capture_output=True, timeout=120,
        )  # fmt: skip
    port = processes.free_port()
    web_log, worker_log = tmp_path / "web.log", tmp_path / "worker.log"
    with (
        processes.web(port, env, web_log),
        processes.worker(env, worker_log),
    ):
        write_rows.delay("worker", SECONDS)
        results: list = []
        until = time.monotonic() + SECONDS
        threads = [
            threading.Thread(target=log_in_repeatedly, args=(port, until, results))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        def worker_done():
            with sqlite3.connect(database, timeout=30) as db:
                row = db.execute(
                    "SELECT name FROM auth_group WHERE name LIKE 'worker-done-%'"
                ).fetchone()
            return row and row[0]

        marker = processes.wait_until(worker_done, 60, "the worker's write task to finish")

    logs = web_log.read_text() + worker_log.read_text()
    assert "database is locked" not in logs
    assert results and all(result is True for result in results), results
    assert int(marker.rsplit("-", 1)[1]) > 10
    with sqlite3.connect(database) as db:
        sessions = db.execute("SELECT COUNT(*) FROM django_session").fetchone()[0]
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert sessions >= len(results)

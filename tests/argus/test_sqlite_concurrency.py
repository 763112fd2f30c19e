"""Embedded SQLite: web and worker writing at once never hit "database is locked"."""

import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from tests.support import processes
from tests.support.celery_tasks import write_rows
from tests.support.http import browser, log_in, submit

pytestmark = pytest.mark.slow

SECONDS = 4
EMAIL, PASSWORD = "writer@example.test", "a long enough password"


def write_through_the_console(port, until, results):
    """Sign in (a session row, last_login, an audit event), then save the profile over
    and over: each save writes the user and appends to the audit chain."""
    base = f"http://127.0.0.1:{port}"
    opener = browser()
    try:
        _status, url, _body = log_in(base, EMAIL, PASSWORD, opener=opener)
        results.append(url.endswith(f":{port}/"))
        count = 0
        while time.monotonic() < until:
            count += 1
            _status, url, _body = submit(opener, f"{base}/profile/", {"name": f"n{count}"})
            results.append(url.endswith("/profile/"))
    except Exception as exc:  # recorded, asserted below
        results.append(repr(exc))


def test_web_and_worker_write_at_once(tmp_path):
    database = tmp_path / "concurrent.sqlite3"
    env = processes.child_env(
        DATABASE_URL=f"sqlite:///{database}",
        DJANGO_SUPERUSER_EMAIL=EMAIL,
        DJANGO_SUPERUSER_PASSWORD=PASSWORD,
        # createsuperuser does not verify the address for allauth.
        ARGUS_EMAIL_VERIFICATION="none",
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
            threading.Thread(target=write_through_the_console, args=(port, until, results))
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
        audited = db.execute("SELECT COUNT(*) FROM orgs_auditevent").fetchone()[0]
    assert sessions >= len(threads)
    assert audited > len(threads)
    # The audit chain written by three web threads at once is intact.
    verify = subprocess.run(
        [sys.executable, "-m", "argus", "audit", "verify"], env=env, cwd=processes.ROOT,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr

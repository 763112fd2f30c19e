"""Start real Argus processes (daphne, Celery) against the test database and broker."""

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def database_url(settings_dict: dict | None = None) -> str:
    """A DATABASE_URL for the database this test process uses now (the test database)."""
    db = settings_dict or connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def child_env(**overrides) -> dict[str, str]:
    """The environment for a child: this process's settings, the test database."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=database_url(),
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(ROOT),
    )
    env.update({key: value for key, value in overrides.items() if value is not None})
    for key in [key for key, value in overrides.items() if value is None]:
        env.pop(key, None)
    return env


def wait_until(predicate, timeout: float, message: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s: {message}")


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def running(command: list[str], *, env: dict, log: Path, ready=None, timeout: float = 60):
    """Run ``command`` for the duration of the block; fail with its log if it dies early."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        if ready is not None:
            deadline = time.monotonic() + timeout
            while not ready():
                if process.poll() is not None:
                    raise AssertionError(
                        f"{command} exited with {process.returncode}:\n{log.read_text()}"
                    )
                if time.monotonic() > deadline:
                    raise AssertionError(f"{command} not ready in {timeout} s:\n{log.read_text()}")
                time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            with suppress(subprocess.TimeoutExpired):
                process.wait(15)
        # Whatever is left in the group (a worker's pool, a leader that hung) goes too.
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def web(port: int, env: dict, log: Path):
    return running(
        [sys.executable, "-m", "argus", "web", "--port", str(port)],
        env=env,
        log=log,
        ready=lambda: port_open(port),
    )


def worker(env: dict, log: Path):
    """A real Celery worker (solo pool) that also loads the test tasks; ready once its
    own heartbeat, under a hostname unique to this call, is in Redis."""
    from argus import heartbeat

    hostname = f"test-{os.getpid()}-{free_port()}@localhost"
    return running(
        [
            sys.executable, "-m", "celery", "-A", "argus", "worker",
            "--include", "tests.support.celery_tasks",
            "--concurrency", "1", "--pool", "solo", "--loglevel", "INFO",
            "--hostname", hostname,
        ],
        env=env, log=log, ready=lambda: hostname in heartbeat.alive("worker"),
    )  # fmt: skip

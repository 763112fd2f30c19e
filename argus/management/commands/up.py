"""``argus up``: migrate, seed the demo organization, and run every process Argus needs.

Children: the embedded broker (when ``REDIS_URL`` is unset), ``argus web``,
``argus worker`` and ``argus beat``, each in its own process group and, on Linux,
set to receive SIGTERM if ``argus up`` itself dies. Ctrl-C, SIGTERM or SIGHUP stops
them all cleanly (a second one kills them at once); a child that dies stops the rest
and makes ``argus up`` exit non-zero.
"""

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from argus import embedded
from argus.hardening import libc
from argus.health import check_all
from orgs.services import DEMO_LOGIN_FILE

STOP_GRACE_SECONDS = 30
READY_WAIT_SECONDS = 90
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    """A supervised child process."""

    name: str
    process: subprocess.Popen


class Stopping(Exception):
    """A stop signal arrived during start-up."""


class Command(BaseCommand):
    help = "Start Argus: migrate, seed the demo organization, run web + worker + beat."

    def add_arguments(self, parser):
        parser.add_argument(
            "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)"
        )
        parser.add_argument("--port", type=int, default=8000, help="port to serve (default 8000)")
        parser.add_argument(
            "--demo",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="create the demo organization on first run "
            "(default: on in embedded mode, off with DATABASE_URL/REDIS_URL)",
        )

    def handle(self, *args, host, port, demo, verbosity, **options):
        if not 0 < port < 65536:
            raise CommandError(f"--port must be between 1 and 65535, got {port}")
        ensure_port_free(host, port)
        self.warn_if_data_dir_is_open()
        self.children: list[Child] = []
        self.stop_requested = False
        self.force = False
        previous = {sig: signal.signal(sig, self.request_stop) for sig in STOP_SIGNALS}
        failed = None
        try:
            if not settings.REDIS_URL_SET:
                self.start_embedded_broker()
            self.stdout.write("Applying migrations…")
            call_command("migrate", interactive=False, verbosity=max(0, verbosity - 1))
            self.check_stop()
            login = self.seed_demo() if (settings.EMBEDDED if demo is None else demo) else None
            python = [sys.executable, "-m", "argus"]
            self.spawn("web", [*python, "web", "--host", host, "--port", str(port)])
            self.spawn("worker", [*python, "worker"])
            self.spawn("beat", [*python, "beat"])
            ready = self.wait_ready(host, port)
            if ready is not None:
                self.announce(f"http://{format_host(host)}:{port}/", login, ready)
            failed = self.supervise()
        except Stopping:
            self.stdout.write("\nStopping…")
        finally:
            self.stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if failed:
            raise CommandError(failed)
        self.stdout.write("Argus stopped.")

    # --- signals ----------------------------------------------------------------------
    def request_stop(self, signum, frame):
        if self.stop_requested:
            self.force = True
            self.stderr.write("Stopping now: killing every process.")
        self.stop_requested = True

    def check_stop(self):
        if self.stop_requested:
            raise Stopping

    # --- children -----------------------------------------------------------------
    def start_embedded_broker(self):
        self.stdout.write(
            f"Starting the embedded broker ({embedded.broker_socket_path(settings.DATA_DIR)})…"
        )
        try:
            process = embedded.start_broker(
                settings.DATA_DIR, start_new_session=True, preexec_fn=die_with_parent(os.getpid())
            )
        except embedded.BrokerUnavailable as exc:
            raise CommandError(str(exc)) from None
        self.children.append(Child("broker", process))

    def spawn(self, name: str, command: list[str]):
        process = subprocess.Popen(  # noqa: S603
            command, start_new_session=True, preexec_fn=die_with_parent(os.getpid())
        )
        self.children.append(Child(name, process))

    def dead_child(self) -> Child | None:
        return next((c for c in self.children if c.process.poll() is not None), None)

    def supervise(self) -> str | None:
        """Wait until asked to stop (None) or a child dies (its description)."""
        while not self.stop_requested:
            child = self.dead_child()
            if child is not None:
                code = child.process.returncode
                message = f"the {child.name} process exited with code {code}; stopping Argus"
                self.stderr.write(self.style.ERROR(f"\n!!! {message}\n"))
                return message
            time.sleep(0.2)
        self.stdout.write("\nStopping…")
        return None

    def stop_all(self):
        """Stop web, worker and beat, then the broker they use."""
        self.stop_batch([c for c in self.children if c.name != "broker"])
        self.stop_batch([c for c in self.children if c.name == "broker"])
        self.children = []

    def stop_batch(self, batch: list[Child]):
        """SIGTERM each child (a worker then finishes its running tasks), wait for the
        grace period or a second stop signal, then SIGKILL whatever is left of each
        child's process group."""
        for child in batch:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while (
            any(child.process.poll() is None for child in batch)
            and time.monotonic() < deadline
            and not self.force
        ):
            time.sleep(0.1)
        for child in batch:
            if child.process.poll() is None:
                self.stderr.write(f"the {child.name} process did not stop in time; killing it")
            # Whatever the child left in its group (pool processes) goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()

    # --- start-up --------------------------------------------------------------------
    def warn_if_data_dir_is_open(self):
        mode = settings.DATA_DIR.stat().st_mode
        if mode & 0o077:
            self.stderr.write(
                self.style.WARNING(
                    f"{settings.DATA_DIR} is readable by other users and holds secrets and "
                    f"the database: chmod 700 {settings.DATA_DIR}"
                )
            )

    def seed_demo(self):
        from orgs.services import seed_demo_organization

        user, password, created = seed_demo_organization(settings.DATA_DIR)
        if created:
            self.stdout.write(f"Created the demo organization with admin {user.email}.")
        self.seed_demo_server(user)
        return user.email, password

    def seed_demo_server(self, user):
        from agents.services import seed_demo_agents
        from orgs.models import Organization
        from orgs.services import DEMO_SLUG
        from tools.services import seed_demo_server

        organization = Organization.objects.filter(slug=DEMO_SLUG).first()
        if organization is None:
            return
        server = seed_demo_server(organization)
        if server is None:
            self.stdout.write("stdio servers are off (ARGUS_ALLOW_STDIO): no demo MCP server.")
        elif server.last_synced_at is not None:
            count = server.tools.count()
            self.stdout.write(f"Demo MCP server '{server.name}' is registered ({count} tools).")
            agents = seed_demo_agents(organization, server, user)
            if agents:
                self.stdout.write(f"Created {len(agents)} demo agents.")

    def wait_ready(self, host: str, port: int) -> bool | None:
        """Wait until web accepts connections and every component is up.

        True when ready, False when not in time (Argus runs on, degraded), None when a
        child died or a stop was requested (``supervise`` then says which).
        """
        deadline = time.monotonic() + READY_WAIT_SECONDS
        while time.monotonic() < deadline:
            if self.stop_requested or self.dead_child() is not None:
                return None
            if port_open(host, port) and async_to_sync(check_all)()["status"] == "ok":
                return True
            time.sleep(0.5)
        return False

    def announce(self, url: str, login, ready: bool):
        lines = ["", "=" * 64, f"  Argus is running at {url}"]
        if not ready:
            lines.append("  (not every component is healthy yet: see /health/)")
        if login:
            email, password = login
            lines.append(f"  Log in as {email}")
            kept_in = settings.DATA_DIR / DEMO_LOGIN_FILE
            if password:
                lines.append(f"  password: {password}   (kept in {kept_in})")
            else:
                lines.append(f"  password: the one you set ({kept_in} is gone)")
        lines += ["  Stop with Ctrl-C.", "=" * 64, ""]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()


def die_with_parent(parent_pid: int):
    """A ``preexec_fn`` that makes the child get SIGTERM when ``argus up`` dies (Linux),
    so a killed supervisor leaves no orphans behind."""
    if not sys.platform.startswith("linux"):
        return None
    c_library = libc()

    def preexec():
        c_library.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def format_host(host: str) -> str:
    """The host to print in a URL: loopback for a wildcard bind, brackets for IPv6."""
    if host in {"0.0.0.0", "::"}:  # noqa: S104 - binding everywhere is the user's choice
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on the address ``argus web`` binds."""
    target = "127.0.0.1" if host in {"0.0.0.0", "::"} else host  # noqa: S104
    try:
        with socket.create_connection((target, port), timeout=0.5):
            return True
    except OSError:
        return False


def ensure_port_free(host: str, port: int) -> None:
    """Raise CommandError naming the address when ``argus web`` could not bind it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CommandError(
                f"cannot listen on {host}:{port} ({exc.strerror}); choose another with --port"
            ) from None

"""``argus up``: migrate, seed the demo organization, and run every process Argus needs.

Children: the embedded broker (when ``REDIS_URL`` is unset), ``argus web``,
``argus worker`` and ``argus beat``. Each runs in its own process group so stopping
one stops everything it started. Ctrl-C or SIGTERM stops them all cleanly; a child
that dies stops the rest and makes ``argus up`` exit non-zero.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from argus import embedded
from orgs.services import DEMO_LOGIN_FILE

STOP_GRACE_SECONDS = 15
HEALTH_WAIT_SECONDS = 90


@dataclass
class Child:
    """A supervised child process."""

    name: str
    process: subprocess.Popen


class Command(BaseCommand):
    help = "Start Argus: migrate, seed the demo organization, run web + worker + beat."

    def add_arguments(self, parser):
        parser.add_argument(
            "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)"
        )
        parser.add_argument("--port", type=int, default=8000, help="port to serve (default 8000)")
        parser.add_argument(
            "--no-demo", action="store_true", help="do not create the demo organization"
        )

    def handle(self, *args, host, port, no_demo, verbosity, **options):
        if not 0 < port < 65536:
            raise CommandError(f"--port must be between 1 and 65535, got {port}")
        ensure_port_free(host, port)
        self.children: list[Child] = []
        self.stop_requested = False
        previous = {
            sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            if not settings.REDIS_URL_SET:
                self.start_embedded_broker()
            self.stdout.write("Applying migrations…")
            call_command("migrate", interactive=False, verbosity=max(0, verbosity - 1))
            login = None if no_demo else self.seed_demo()
            python = [sys.executable, "-m", "argus"]
            self.spawn("web", [*python, "web", "--host", host, "--port", str(port)])
            self.spawn("worker", [*python, "worker"])
            self.spawn("beat", [*python, "beat"])
            url = f"http://{format_host(host)}:{port}/"
            self.announce(url, login, self.wait_healthy(url))
            failed = self.supervise()
        finally:
            self.stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if failed:
            raise CommandError(failed)
        self.stdout.write("Argus stopped.")

    # --- children -----------------------------------------------------------------
    def start_embedded_broker(self):
        self.stdout.write(
            f"Starting the embedded broker ({embedded.broker_socket_path(settings.DATA_DIR)})…"
        )
        try:
            process = embedded.start_broker(settings.DATA_DIR, start_new_session=True)
        except embedded.BrokerUnavailable as exc:
            raise CommandError(str(exc)) from None
        self.children.append(Child("broker", process))

    def spawn(self, name: str, command: list[str]):
        process = subprocess.Popen(command, start_new_session=True)  # noqa: S603
        self.children.append(Child(name, process))

    def request_stop(self, signum, frame):
        self.stop_requested = True

    def supervise(self) -> str | None:
        """Wait until asked to stop (None) or a child dies (its description)."""
        while not self.stop_requested:
            for child in self.children:
                code = child.process.poll()
                if code is not None:
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
        """SIGTERM each child's process group, wait, then SIGKILL whatever is left."""
        for child in batch:
            signal_group(child.process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in batch:
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"the {child.name} process did not stop in time; killing it")
            # Whatever the child left in its group (pool processes) goes too.
            signal_group(child.process, signal.SIGKILL)
            child.process.wait()

    # --- start-up output --------------------------------------------------------------
    def seed_demo(self):
        from orgs.services import seed_demo_organization

        user, password, created = seed_demo_organization(settings.DATA_DIR)
        if created:
            self.stdout.write(f"Created the demo organization with admin {user.email}.")
        return user.email, password

    def wait_healthy(self, url: str) -> dict | None:
        """Poll /health/ until it is 200; None when it does not get there in time."""
        deadline = time.monotonic() + HEALTH_WAIT_SECONDS
        while time.monotonic() < deadline and not self.stop_requested:
            if any(child.process.poll() is not None for child in self.children):
                return None
            try:
                with urllib.request.urlopen(url + "health/", timeout=5) as response:  # noqa: S310
                    if response.status == 200:
                        return {"status": "ok"}
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        return None

    def announce(self, url: str, login, health):
        lines = ["", "=" * 64, f"  Argus is running at {url}"]
        if health is None:
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


def signal_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def format_host(host: str) -> str:
    if host in {"0.0.0.0", "::"}:  # noqa: S104 - binding everywhere is the user's choice
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def ensure_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CommandError(
                f"cannot listen on {host}:{port} ({exc.strerror}); choose another with --port"
            ) from None

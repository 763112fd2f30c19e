"""``argus web``: serve HTTP and websockets with daphne."""

from daphne.cli import CommandLineInterface
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve the console, the API and websockets (daphne)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)"
        )
        parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
        parser.add_argument(
            "--proxy-headers",
            action="store_true",
            help="trust X-Forwarded-For/-Proto from a reverse proxy",
        )

    def handle(self, *args, host, port, proxy_headers, verbosity, **options):
        argv = ["--bind", host, "--port", str(port), "--verbosity", str(verbosity)]
        if proxy_headers:
            argv.append("--proxy-headers")
        CommandLineInterface().run([*argv, "argus.asgi:application"])

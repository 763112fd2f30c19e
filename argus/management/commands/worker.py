"""``argus worker``: run a Celery worker."""

from django.conf import settings
from django.core.management.base import BaseCommand

from argus.celery import app


class Command(BaseCommand):
    help = "Run a Celery worker that executes Argus's background jobs."

    def add_arguments(self, parser):
        parser.add_argument("--concurrency", type=int, help="worker processes (default: CPUs)")
        parser.add_argument("--queues", help="comma-separated queues to consume")
        parser.add_argument("--hostname", help="worker node name (default celery@<host>)")

    def handle(self, *args, concurrency, queues, hostname, **options):
        argv = ["worker", "--loglevel", settings.LOG_LEVEL]
        if concurrency:
            argv += ["--concurrency", str(concurrency)]
        if queues:
            argv += ["--queues", queues]
        if hostname:
            argv += ["--hostname", hostname]
        app.worker_main(argv)

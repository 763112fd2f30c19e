"""``argus beat``: run Celery beat with the database scheduler. Run exactly one."""

from django.conf import settings
from django.core.management.base import BaseCommand

from argus.celery import app


class Command(BaseCommand):
    help = "Run Celery beat (django-celery-beat's database scheduler); run exactly one."

    def handle(self, *args, **options):
        app.start(["beat", "--loglevel", settings.LOG_LEVEL])

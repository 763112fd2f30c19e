"""The beat scheduler: django-celery-beat's DatabaseScheduler that also stamps liveness."""

import logging
import time

from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler

from argus.heartbeat import forget, process_name, record_heartbeat

logger = logging.getLogger(__name__)


class HeartbeatScheduler(DatabaseScheduler):
    """DatabaseScheduler that stamps beat's heartbeat at least every interval."""

    def __init__(self, *args, **kwargs):
        self._last_stamp = 0.0
        self._name = process_name()
        super().__init__(*args, **kwargs)
        # Wake often enough to stamp on time even when no task is due.
        self.max_interval = min(self.max_interval, settings.ARGUS_HEARTBEAT_INTERVAL)

    def tick(self, *args, **kwargs):
        now = time.monotonic()
        if now - self._last_stamp >= settings.ARGUS_HEARTBEAT_INTERVAL:
            try:
                record_heartbeat("beat", self._name)
                self._last_stamp = now
            except Exception:
                logger.warning("could not record beat heartbeat", exc_info=True)
        return min(super().tick(*args, **kwargs), settings.ARGUS_HEARTBEAT_INTERVAL)

    def close(self):
        try:
            forget("beat", self._name)
        except Exception:
            logger.debug("could not clear beat heartbeat", exc_info=True)
        super().close()

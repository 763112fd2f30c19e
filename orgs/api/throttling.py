"""Per-key rate limit over the shared cache: 429 with ``Retry-After`` when exceeded."""

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from orgs.models import ApiKey


class ApiKeyRateThrottle(SimpleRateThrottle):
    """``ARGUS_API_KEY_RATE`` requests (``600/min`` by default) per API key."""

    scope = "apikey"

    def get_rate(self):
        return settings.ARGUS_API_KEY_RATE

    def get_cache_key(self, request, view):
        if not isinstance(request.auth, ApiKey):
            return None  # only API keys are rate-limited here (allauth limits sign-ins)
        return f"throttle:apikey:{request.auth.pk}"

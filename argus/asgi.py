"""ASGI entry point: HTTP through Django, websockets through Channels at ``/ws/``."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "argus.settings")
django_asgi_app = get_asgi_application()

# Imported once Django is set up: the consumers use the ORM.
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from argus.consumers import EventConsumer  # noqa: E402
from argus.socket_auth import ApiKeyOrSessionAuth  # noqa: E402

websocket_urlpatterns = [path("ws/", EventConsumer.as_asgi())]

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # An API key, or the session cookie behind an origin check.
        "websocket": ApiKeyOrSessionAuth(URLRouter(websocket_urlpatterns)),
    }
)

"""Who a websocket connection is: an API key, or the browser session behind an origin check.

A connection that presents an API key (``Authorization: Bearer argus_sk_…`` or
``X-API-Key``) is authenticated by that key alone: no cookie is read, so the origin
check, which protects cookie-authenticated sockets from other sites, does not apply.
Any other connection goes through Channels' origin validator and session
authentication, as before. A wrong, expired or revoked key refuses the handshake.
"""

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.security.websocket import AllowedHostsOriginValidator, WebsocketDenier

from orgs.permissions import Principal
from orgs.services import authenticate_api_key, presented_api_key, record_api_key_use


def api_key_secret(headers) -> str | None:
    """The API key a handshake presents (see ``presented_api_key``), or ``None``."""
    found = {name: value.decode("latin1") for name, value in headers}
    return presented_api_key(found.get(b"authorization"), found.get(b"x-api-key"))


@database_sync_to_async
def _authenticate(secret: str):
    key = authenticate_api_key(secret)
    if key is None:
        return None
    if not Principal.for_api_key(key).is_member:
        return None  # its creator left: it acts for nobody
    record_api_key_use(key)
    return key


class ApiKeyOrSessionAuth:
    """ASGI middleware for the websocket router (see the module docstring)."""

    def __init__(self, inner):
        self.inner = inner
        self.with_session = AllowedHostsOriginValidator(AuthMiddlewareStack(inner))

    async def __call__(self, scope, receive, send):
        secret = api_key_secret(scope.get("headers", []))
        if secret is None:
            return await self.with_session(scope, receive, send)
        key = await _authenticate(secret)
        if key is None:
            return await WebsocketDenier()(scope, receive, send)
        scope = dict(
            scope,
            user=key.created_by,
            api_key=key,
            api_key_hash=key.matched_hash,
            session=None,
        )
        return await self.inner(scope, receive, send)

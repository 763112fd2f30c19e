"""API key authentication: ``Authorization: Bearer argus_sk_…`` or ``X-API-Key``."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from orgs.services import authenticate_api_key, presented_api_key, record_api_key_use

INVALID = "Invalid, expired or revoked API key."


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Authenticates as the key's creator, with the key as ``request.auth``.

    A wrong, expired or revoked key is a 401 that does not say which. Other
    ``Authorization`` schemes are left to the next authenticator.
    """

    def authenticate(self, request):
        secret = presented_api_key(
            request.META.get("HTTP_AUTHORIZATION"), request.META.get("HTTP_X_API_KEY")
        )
        if secret is None:
            return None
        key = authenticate_api_key(secret)
        if key is None:
            raise exceptions.AuthenticationFailed(INVALID)
        record_api_key_use(key)
        return key.created_by, key

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """Documents API keys in the OpenAPI schema (Bearer, or the X-API-Key header)."""

    target_class = ApiKeyAuthentication
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "argus_sk_…",
            "description": "An API key, as `Authorization: Bearer argus_sk_…` or `X-API-Key`.",
        }

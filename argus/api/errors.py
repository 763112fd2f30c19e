"""Every API error as ``{"detail": "...", "code": "...", "errors": {"field": ["message"]}}``
(ARCHITECTURE §9); ``code`` is stable for programs (``plan_limit``, ``not_found``…)."""

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from argus.errors import ServiceError


def _messages(value) -> list[str]:
    if isinstance(value, list | tuple):
        return [str(item) for item in value]
    return [str(value)]


def _code(exc) -> str:
    """A stable machine-readable code: DRF's (``not_found``, ``throttled``…)."""
    return str(getattr(exc, "default_code", "error"))


def exception_handler(exc, context):
    """Map service errors, Django and DRF exceptions to one response shape."""
    if isinstance(exc, ServiceError):
        set_rollback()
        errors = {exc.field: [exc.message]} if exc.field else {}
        return Response(
            {"detail": exc.message, "code": exc.code, "errors": errors}, status=exc.status
        )
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            exc = exceptions.ValidationError(exc.message_dict)
        else:
            exc = exceptions.ValidationError({"non_field_errors": exc.messages})
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(exc, exceptions.ValidationError):
        errors = (
            {field: _messages(messages) for field, messages in data.items()}
            if isinstance(data, dict)
            else {"non_field_errors": _messages(data)}
        )
        first = next(iter(errors.values()), ["Invalid input."])
        detail = "Invalid input: " + first[0] if first else "Invalid input."
        response.data = {"detail": detail, "code": "invalid", "errors": errors}
    elif isinstance(data, dict) and "detail" in data:
        response.data = {"detail": str(data["detail"]), "code": _code(exc), "errors": {}}
    else:
        response.data = {
            "detail": "Request failed.",
            "code": _code(exc),
            "errors": {"non_field_errors": _messages(data)},
        }
    if response.status_code == status.HTTP_401_UNAUTHORIZED and "WWW-Authenticate" not in response:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response

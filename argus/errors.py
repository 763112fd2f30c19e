"""Errors services raise, which every caller turns into the same answer.

The API maps them to ``{"detail", "errors"}`` with their status (argus/api/errors.py);
console views show them as form errors or messages. Permission refusals are Django's
``PermissionDenied``; objects outside the caller's reach are never looked up (404).
"""


class ServiceError(Exception):
    """A request that cannot be carried out as asked (HTTP 400).

    ``field`` names the input at fault, so forms and the API can attach the message.
    """

    status = 400
    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code


class Conflict(ServiceError):
    """The object's current state does not allow this (HTTP 409)."""

    status = 409
    code = "conflict"


class LimitExceeded(Conflict):
    """The organization's plan does not allow more of something."""

    code = "plan_limit"

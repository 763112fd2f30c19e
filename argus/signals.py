"""Signal receivers of the project glue."""

from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver

from argus.events import end_session


@receiver(user_logged_out, dispatch_uid="argus.close_sockets_at_logout")
def close_sockets_at_logout(sender, request, user, **kwargs):
    """A logged-out session keeps no live socket (the session row is flushed next)."""
    key = getattr(getattr(request, "session", None), "session_key", None)
    if key:
        end_session(key)

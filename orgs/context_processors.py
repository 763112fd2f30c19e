"""Template variables for the account pages."""

from allauth.account.adapter import get_adapter


def signup(request):
    """``signup_open``: whether this visitor may create an account (the orgs.adapter
    policy); a callable, so only pages that ask pay for the invitation lookup."""
    return {"signup_open": lambda: get_adapter(request).is_open_for_signup(request)}

"""The console's shared shell: navigation and the current organization for templates."""

from django.urls import NoReverseMatch, reverse
from django.utils.functional import SimpleLazyObject

from orgs.middleware import request_principal
from orgs.permissions import Action
from orgs.services import organizations_of

# (label, URL name). Sections whose app has not registered its pages yet are shown
# greyed out rather than linking to a page that does not exist.
NAVIGATION = [
    ("Dashboard", "console:dashboard"),
    ("Servers", "tools:server_list"),
    ("Tools", "tools:tool_list"),
    ("Agents", "agents:agent_list"),
    ("Tasks", "tasks:task_list"),
    ("Recordings", "recordings:run_list"),
    ("Approvals", "agents:approval_list"),
    ("Settings", "orgs:settings"),
]


def navigation(request):
    """Context processor: ``nav_items``, ``current_organization``, ``current_role``,
    ``user_organizations`` (for the switcher) and ``org_can_manage``."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    items = []
    for label, url_name in NAVIGATION:
        try:
            url = reverse(url_name)
        except NoReverseMatch:
            url = None
        active = url is not None and (
            request.path == url or (url != "/" and request.path.startswith(url))
        )
        items.append({"label": label, "url": url, "active": active})
    organization = getattr(request, "organization", None) or None
    role = organization.member_role if organization is not None else None
    principal = request_principal(request) if organization is not None else None
    can_manage = principal is not None and principal.org_allows(Action.MANAGE)
    return {
        "nav_items": items,
        "current_organization": organization,
        "current_role": role,
        "org_can_manage": can_manage,
        "user_organizations": SimpleLazyObject(
            lambda: list(organizations_of(user).order_by("name", "id"))
        ),
    }

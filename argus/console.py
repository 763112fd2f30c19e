"""The console's shared shell: navigation and the current organization for templates."""

import json
import logging
from datetime import datetime

from django.urls import NoReverseMatch, reverse
from django.utils.functional import SimpleLazyObject

from argus import events
from orgs.middleware import request_principal
from orgs.permissions import Action
from orgs.services import organizations_of

logger = logging.getLogger(__name__)
# How many events a live card shows when the page is rendered.
RECENT_EVENTS = 20

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


# --- live cards ----------------------------------------------------------------------------
def newest_event_id(topic: str, organization_id: int) -> int | None:
    """The id of a topic's newest event, or None when the event log cannot be read (a
    page still renders; the dashboard's health card says what is down)."""
    try:
        return events.last_id(events.Stream(organization_id, topic))
    except Exception:
        logger.warning("could not read the newest event of %s", topic, exc_info=True)
        return None


def live_events(topic: str, organization_id: int) -> dict:
    """The context of ``partials/live_events.html``: the topic, its newest events (so
    the card is complete without a socket) and the id they end at (the subscription
    replays anything newer)."""
    stream = events.Stream(organization_id, topic)
    try:
        newest = events.last_id(stream)
        recent = events.events_between(stream, max(0, newest - RECENT_EVENTS), newest)
    except Exception:
        logger.warning("could not read recent events of %s", topic, exc_info=True)
        return {"events_topic": topic, "recent_events": [], "events_last_id": None}
    return {
        "events_topic": topic,
        "recent_events": [
            {
                "id": event["id"],
                "type": event["type"],
                "at": datetime.fromisoformat(event["at"]),
                "data": json.dumps(event["data"], separators=(",", ":")),
            }
            for event in reversed(recent)
        ],
        "events_last_id": newest,
    }

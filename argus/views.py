"""Views of the project glue: health and the console's home."""

import json
import logging
from datetime import datetime

from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.generic import TemplateView

from argus import events
from argus.health import check_all, public

logger = logging.getLogger(__name__)
RECENT_EVENTS = 20


@never_cache
async def health(request):
    """200 with every component's state when all are up, 503 otherwise.

    Anyone may ask; only staff see host names, process names and error messages.
    """
    report = await check_all()
    status = 200 if report["status"] == "ok" else 503
    user = await request.auser()
    return JsonResponse(report if user.is_staff else public(report), status=status)


class DashboardView(LoginRequiredMixin, TemplateView):
    """The console's home: the current organization and the live event feed."""

    template_name = "console/dashboard.html"

    def get_context_data(self, **kwargs):
        """The organization's latest events, so the page is complete without a socket."""
        context = super().get_context_data(**kwargs)
        organization = self.request.organization
        context["recent_events"], context["events_last_id"] = [], None
        if not organization:
            return context
        stream = events.Stream(organization.pk, "org")
        try:
            newest = events.last_id(stream)
            recent = events.events_between(stream, max(0, newest - RECENT_EVENTS), newest)
        except Exception:  # the page still renders; the health card says what is down
            logger.warning("could not read recent events", exc_info=True)
            return context
        context["events_last_id"] = newest
        context["recent_events"] = [
            {
                "id": event["id"],
                "type": event["type"],
                "at": datetime.fromisoformat(event["at"]),
                "data": json.dumps(event["data"], separators=(",", ":")),
            }
            for event in reversed(recent)
        ]
        return context

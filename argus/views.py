"""Views of the project glue: health and the console's home."""

from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.generic import TemplateView

from argus.console import live_events
from argus.health import check_all, public


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
        if organization:
            context.update(live_events("org", organization.pk))
        return context

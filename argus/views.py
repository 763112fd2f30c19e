"""Views of the project glue: health and the console's home."""

from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.generic import TemplateView

from argus.health import check_all


@never_cache
async def health(request):
    """200 with every component's state when all are up, 503 otherwise."""
    report = await check_all()
    return JsonResponse(report, status=200 if report["status"] == "ok" else 503)


class DashboardView(LoginRequiredMixin, TemplateView):
    """The console's home: the current organization and the live event feed."""

    template_name = "console/dashboard.html"

"""Root URLs: console, accounts (allauth), REST API, admin, health."""

from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.utils.functional import lazy
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from argus import views

# The admin signs in through allauth: two-factor authentication and rate limits apply.
admin.site.login = secure_admin_login(admin.site.login)

console_patterns = ([path("", views.DashboardView.as_view(), name="dashboard")], "console")

api_patterns = [
    path("", include("orgs.api.urls")),
    path("", include("tools.api.urls")),
    path("", include("agents.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
]

urlpatterns = [
    path("", include(console_patterns)),
    path("", include("orgs.urls")),
    path("", include("tools.urls")),
    path("", include("agents.urls")),
    path("accounts/", include("allauth.urls")),
    path("api/v1/", include((api_patterns, "api"))),
    path("admin/", admin.site.urls),
    path("health/", views.health, name="health"),
    # Resolved per request (the hashed name exists only after collectstatic) and not
    # permanent, since that name changes with every release.
    path(
        "favicon.ico",
        RedirectView.as_view(url=lazy(static, str)("argus/favicon.svg")),
    ),
]

"""Root URLs: console, accounts, admin, health."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.utils.functional import lazy
from django.views.generic import RedirectView

from argus import views

console_patterns = ([path("", views.DashboardView.as_view(), name="dashboard")], "console")

urlpatterns = [
    path("", include(console_patterns)),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("health/", views.health, name="health"),
    # Resolved per request (the hashed name exists only after collectstatic) and not
    # permanent, since that name changes with every release.
    path(
        "favicon.ico",
        RedirectView.as_view(url=lazy(static, str)("argus/favicon.svg")),
    ),
]

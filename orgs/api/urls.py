from django.urls import path
from rest_framework.routers import SimpleRouter

from orgs.api import views

router = SimpleRouter()
router.register("members", views.MemberViewSet, basename="member")
router.register("invitations", views.InvitationViewSet, basename="invitation")
router.register("teams", views.TeamViewSet, basename="team")
router.register("audit", views.AuditEventViewSet, basename="audit")
router.register("api-keys", views.ApiKeyViewSet, basename="apikey")

urlpatterns = [
    path("me/", views.MeView.as_view(), name="me"),
    path("organization/", views.OrganizationView.as_view(), name="organization"),
    *router.urls,
]

"""REST endpoints of the agents app: agents, grants, approvals."""

from rest_framework.routers import SimpleRouter

from agents.api import views

router = SimpleRouter()
router.register("agents", views.AgentViewSet, basename="agent")
router.register("grants", views.ToolGrantViewSet, basename="grant")
router.register("approvals", views.ApprovalViewSet, basename="approval")

urlpatterns = router.urls

from rest_framework.routers import SimpleRouter

from tools.api import views

router = SimpleRouter()
router.register("servers", views.ServerViewSet, basename="server")
router.register("tools", views.ToolViewSet, basename="tool")

urlpatterns = router.urls

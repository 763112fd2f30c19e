from django.urls import path

from tools import views

app_name = "tools"

urlpatterns = [
    path("servers/", views.ServerListView.as_view(), name="server_list"),
    path("servers/new/", views.ServerCreateView.as_view(), name="server_create"),
    path("servers/test/", views.ServerTestNewView.as_view(), name="server_test_new"),
    path("servers/<int:pk>/", views.ServerDetailView.as_view(), name="server_detail"),
    path("servers/<int:pk>/edit/", views.ServerEditView.as_view(), name="server_edit"),
    path(
        "servers/<int:pk>/test-config/",
        views.ServerTestConfigView.as_view(),
        name="server_test_config",
    ),
    path("servers/<int:pk>/delete/", views.ServerDeleteView.as_view(), name="server_delete"),
    path("servers/<int:pk>/test/", views.ServerTestView.as_view(), name="server_test"),
    path("servers/<int:pk>/sync/", views.ServerSyncView.as_view(), name="server_sync"),
    path(
        "servers/<int:pk>/maintenance/",
        views.ServerMaintenanceView.as_view(),
        name="server_maintenance",
    ),
    path("servers/<int:pk>/access/", views.ServerAccessView.as_view(), name="server_access"),
    path("tools/", views.ToolListView.as_view(), name="tool_list"),
    path("tools/<int:pk>/", views.ToolDetailView.as_view(), name="tool_detail"),
    path("tools/<int:pk>/try/", views.ToolTryView.as_view(), name="tool_try"),
    path("tools/<int:pk>/accept/", views.ToolAcceptView.as_view(), name="tool_accept"),
]

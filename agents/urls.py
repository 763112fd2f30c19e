"""Console URLs of the agents app (``agents:<model>_<action>``)."""

from django.urls import path

from agents import views

app_name = "agents"

urlpatterns = [
    path("agents/", views.AgentListView.as_view(), name="agent_list"),
    path("agents/tree/", views.AgentTreeView.as_view(), name="agent_tree"),
    path("agents/new/", views.AgentCreateView.as_view(), name="agent_create"),
    path("agents/matrix/", views.MatrixView.as_view(), name="matrix"),
    path("agents/matrix/cell/", views.MatrixCellView.as_view(), name="matrix_cell"),
    path("agents/pause/", views.PauseAgentsView.as_view(), name="pause_agents"),
    path("agents/resume/", views.ResumeAgentsView.as_view(), name="resume_agents"),
    path("agents/<int:pk>/", views.AgentDetailView.as_view(), name="agent_detail"),
    path("agents/<int:pk>/edit/", views.AgentEditView.as_view(), name="agent_edit"),
    path("agents/<int:pk>/delete/", views.AgentDeleteView.as_view(), name="agent_delete"),
    path("agents/<int:pk>/suspend/", views.AgentSuspendView.as_view(), name="agent_suspend"),
    path("agents/<int:pk>/resume/", views.AgentResumeView.as_view(), name="agent_resume"),
    path("agents/<int:pk>/recover/", views.AgentRecoverView.as_view(), name="agent_recover"),
    path(
        "agents/<int:pk>/request-approval/",
        views.AgentRequestApprovalView.as_view(),
        name="agent_request_approval",
    ),
    path("agents/<int:pk>/access/", views.AgentAccessView.as_view(), name="agent_access"),
    path("agents/<int:pk>/grants/new/", views.GrantCreateView.as_view(), name="grant_create"),
    path("grants/<int:pk>/edit/", views.GrantEditView.as_view(), name="grant_edit"),
    path("grants/<int:pk>/delete/", views.GrantDeleteView.as_view(), name="grant_delete"),
    path("approvals/", views.ApprovalListView.as_view(), name="approval_list"),
    path("approvals/<int:pk>/", views.ApprovalDetailView.as_view(), name="approval_detail"),
    path(
        "approvals/<int:pk>/approve/",
        views.ApprovalApproveView.as_view(),
        name="approval_approve",
    ),
    path("approvals/<int:pk>/reject/", views.ApprovalRejectView.as_view(), name="approval_reject"),
    path(
        "approvals/<int:pk>/withdraw/",
        views.ApprovalWithdrawView.as_view(),
        name="approval_withdraw",
    ),
]

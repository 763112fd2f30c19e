from django.urls import path

from orgs import views

app_name = "orgs"

urlpatterns = [
    path("settings/", views.OrganizationSettingsView.as_view(), name="settings"),
    path("settings/access/", views.OrganizationAccessView.as_view(), name="organization_access"),
    path("settings/members/", views.MemberListView.as_view(), name="member_list"),
    path("settings/members/<int:pk>/role/", views.MemberRoleView.as_view(), name="member_role"),
    path(
        "settings/members/<int:pk>/remove/", views.MemberRemoveView.as_view(), name="member_remove"
    ),
    path("settings/invitations/", views.InvitationListView.as_view(), name="invitation_list"),
    path(
        "settings/invitations/new/",
        views.InvitationCreateView.as_view(),
        name="invitation_create",
    ),
    path(
        "settings/invitations/<int:pk>/resend/",
        views.InvitationResendView.as_view(),
        name="invitation_resend",
    ),
    path(
        "settings/invitations/<int:pk>/revoke/",
        views.InvitationRevokeView.as_view(),
        name="invitation_revoke",
    ),
    path("settings/teams/", views.TeamListView.as_view(), name="team_list"),
    path("settings/teams/new/", views.TeamCreateView.as_view(), name="team_create"),
    path("settings/teams/<int:pk>/", views.TeamEditView.as_view(), name="team_edit"),
    path("settings/teams/<int:pk>/access/", views.TeamAccessView.as_view(), name="team_access"),
    path("settings/teams/<int:pk>/delete/", views.TeamDeleteView.as_view(), name="team_delete"),
    path("settings/api-keys/", views.ApiKeyListView.as_view(), name="apikey_list"),
    path("settings/api-keys/new/", views.ApiKeyCreateView.as_view(), name="apikey_create"),
    path(
        "settings/api-keys/<int:pk>/rotate/", views.ApiKeyRotateView.as_view(), name="apikey_rotate"
    ),
    path(
        "settings/api-keys/<int:pk>/revoke/", views.ApiKeyRevokeView.as_view(), name="apikey_revoke"
    ),
    path("settings/audit/", views.AuditListView.as_view(), name="audit_list"),
    path("settings/audit/export/", views.AuditExportView.as_view(), name="audit_export"),
    path("profile/", views.ProfileView.as_view(), name="profile"),
    path("organizations/switch/", views.SwitchOrganizationView.as_view(), name="switch"),
    path(
        "invitations/<str:token>/", views.InvitationAcceptView.as_view(), name="invitation_accept"
    ),
]

"""REST endpoints of the orgs app (ARCHITECTURE §9). Writes call services."""

from datetime import timedelta

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from argus.api.pagination import CursorPagination
from argus.api.viewsets import OrgModelViewSet, OrgViewSet
from orgs import services
from orgs.api import serializers
from orgs.filters import AuditFilter, InvitationFilter, MemberFilter
from orgs.middleware import request_principal
from orgs.models import ApiKey, AuditEvent, Invitation, Membership, Organization, Team
from orgs.permissions import Action, can, denial


class MeView(APIView):
    """Who the caller is, in which organization, with which effective rights."""

    @extend_schema(responses=serializers.MeSerializer)
    def get(self, request):
        principal = request_principal(request, channel="api")
        user = request.user
        organization = principal.organization if principal else None
        if organization is not None and principal.role is not None:
            organization.member_role = principal.role
        # What the caller may do across the organization: its role and the grants on the
        # organization itself, within a key's scopes.
        actions = (
            [
                name
                for name in Action.values
                if principal.is_member
                and principal.scope_allows(name)
                and principal.org_allows(name)
            ]
            if principal is not None
            else []
        )
        key = request.auth if isinstance(request.auth, ApiKey) else None
        data = {
            "id": user.pk,
            "email": user.email,
            "name": user.name,
            "organization": organization,
            "role": principal.role if principal else None,
            "actions": actions,
            "authentication": "api_key" if key else "session",
            "api_key": key,
        }
        return Response(serializers.MeSerializer(data).data)


class OrganizationView(APIView):
    """The current organization's settings: read (members), change (``manage``)."""

    @extend_schema(responses=serializers.OrganizationSerializer)
    def get(self, request):
        principal = self._principal(request)
        return Response(serializers.OrganizationSerializer(principal.organization).data)

    @extend_schema(
        request=serializers.OrganizationSerializer, responses=serializers.OrganizationSerializer
    )
    def patch(self, request):
        principal = self._principal(request)
        serializer = serializers.OrganizationSerializer(
            principal.organization, data=request.data, partial=True
        )
        serializer.is_valid(raise_exception=True)
        organization = services.update_organization(
            principal, principal.organization, **serializer.validated_data
        )
        organization.member_role = principal.role
        return Response(serializers.OrganizationSerializer(organization).data)

    def _principal(self, request):
        principal = request_principal(request, channel="api")
        if principal is None or not principal.is_member:
            raise PermissionDenied("You are not a member of any organization.")
        if not can(principal, Action.VIEW, principal.organization):
            raise PermissionDenied(denial(principal, Action.VIEW, Organization))
        principal.organization.member_role = principal.role
        return principal


class MemberViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgViewSet):
    """Members and their roles. Only ADMIN (``manage``) changes roles or removes members."""

    queryset = Membership.objects.select_related("user").order_by("user__email")
    serializer_class = serializers.MemberSerializer
    filterset_class = MemberFilter

    @extend_schema(request=serializers.RoleSerializer, responses=serializers.MemberSerializer)
    def partial_update(self, request, pk=None):
        membership = self.get_object()
        serializer = serializers.RoleSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        updated = services.change_role(
            self.principal, membership, serializer.validated_data["role"]
        )
        return Response(self.get_serializer(updated).data)

    def destroy(self, request, pk=None):
        membership = self.get_object()
        services.remove_member(self.principal, membership)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def check_object_permissions(self, request, obj):
        # Leaving (removing one's own membership) needs no ``manage``.
        if self.action == "destroy" and obj.user_id == request.user.pk:
            return
        super().check_object_permissions(request, obj)


class InvitationViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, OrgViewSet
):
    """Invitations (``manage``): create, resend (a new link), revoke."""

    queryset = Invitation.objects.select_related("invited_by")
    serializer_class = serializers.InvitationSerializer
    filterset_class = InvitationFilter

    @extend_schema(responses={201: serializers.InvitationCreatedSerializer})
    def create(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        invitation, token = self.write(
            services.invite, serializer.validated_data["email"], serializer.validated_data["role"]
        )
        return self._with_url(invitation, token, status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=serializers.InvitationCreatedSerializer)
    @action(detail=True, methods=["post"])
    def resend(self, request, pk=None):
        invitation, token = services.resend_invitation(self.principal, self.get_object())
        return self._with_url(invitation, token, status.HTTP_200_OK)

    @extend_schema(request=None, responses=serializers.InvitationSerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        invitation = services.revoke_invitation(self.principal, self.get_object())
        return Response(self.get_serializer(invitation).data)

    def _with_url(self, invitation, token, code):
        invitation.accept_url = services.invitation_url(token)
        return Response(serializers.InvitationCreatedSerializer(invitation).data, status=code)


class TeamViewSet(OrgModelViewSet):
    """Teams: named groups of members that can hold per-object grants."""

    queryset = Team.objects.prefetch_related("members")
    serializer_class = serializers.TeamSerializer

    def perform_create(self, serializer):
        data = serializer.validated_data
        serializer.instance = self.write(
            services.create_team,
            data["name"],
            description=data.get("description", ""),
            members=[member.pk for member in data.get("members", [])],
        )

    def perform_update(self, serializer):
        data = serializer.validated_data
        members = data.get("members")
        serializer.instance = self.write(
            services.update_team,
            serializer.instance,
            name=data.get("name"),
            description=data.get("description"),
            members=[member.pk for member in members] if members is not None else None,
        )

    def perform_destroy(self, instance):
        services.delete_team(self.principal, instance)


class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgViewSet):
    """The organization's audit log (``manage``), newest first, cursor-paginated."""

    queryset = AuditEvent.objects.all()
    serializer_class = serializers.AuditEventSerializer
    filterset_class = AuditFilter
    pagination_class = type("AuditCursor", (CursorPagination,), {"ordering": "-seq"})


class ApiKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, OrgViewSet):
    """API keys: yours (everyone's with ``manage``). Session authentication only."""

    queryset = ApiKey.objects.select_related("created_by")
    serializer_class = serializers.ApiKeySerializer
    session_only = True

    @extend_schema(
        request=serializers.ApiKeyCreateSerializer,
        responses={201: serializers.ApiKeySecretSerializer},
    )
    def create(self, request):
        serializer = serializers.ApiKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        key, secret = self.write(
            services.create_api_key,
            data["name"],
            scopes=data["scopes"],
            role=data.get("role"),
            expires_at=data.get("expires_at"),
        )
        key.secret = secret
        return Response(serializers.ApiKeySecretSerializer(key).data, status=201)

    @extend_schema(request=None, responses=serializers.ApiKeySerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        key = services.revoke_api_key(self.principal, self.get_object())
        return Response(self.get_serializer(key).data)

    @extend_schema(
        request=serializers.RotateSerializer, responses=serializers.ApiKeySecretSerializer
    )
    @action(detail=True, methods=["post"])
    def rotate(self, request, pk=None):
        serializer = serializers.RotateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        grace = timedelta(seconds=serializer.validated_data["grace_seconds"])
        key, secret = services.rotate_api_key(self.principal, self.get_object(), grace=grace)
        key.secret = secret
        return Response(serializers.ApiKeySecretSerializer(key).data)

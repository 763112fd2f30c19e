"""Filters shared by the console lists and the API (one FilterSet per list)."""

import django_filters
from django.db.models import Q

from agents.choices import AgentRole, AgentStatus, ApprovalKind, ApprovalStatus, Engine
from agents.models import Agent, ApprovalRequest, ToolGrant


class AgentFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search")
    role = django_filters.ChoiceFilter(choices=AgentRole.choices)
    status = django_filters.ChoiceFilter(choices=AgentStatus.choices)
    engine = django_filters.ChoiceFilter(choices=Engine.choices)
    parent = django_filters.NumberFilter(field_name="parent_id", label="Parent")
    server = django_filters.NumberFilter(field_name="server_id", label="Home server")
    capability = django_filters.CharFilter(method="by_capability", label="Capability tag")

    class Meta:
        model = Agent
        fields = ["q", "role", "status", "engine", "parent", "server", "capability"]

    def search(self, queryset, name, value):
        return queryset.filter(Q(name__icontains=value) | Q(description__icontains=value))

    def by_capability(self, queryset, name, value):
        # JSON containment is not available on SQLite: match the quoted tag in the list.
        return queryset.filter(capabilities__icontains=f'"{value.strip().lower()}"')


class ToolGrantFilter(django_filters.FilterSet):
    agent = django_filters.NumberFilter(field_name="agent_id", label="Agent")
    tool = django_filters.NumberFilter(field_name="tool_id", label="Tool")
    server = django_filters.NumberFilter(field_name="tool__server_id", label="Server")
    allowed = django_filters.BooleanFilter()
    requires_approval = django_filters.BooleanFilter()

    class Meta:
        model = ToolGrant
        fields = ["agent", "tool", "server", "allowed", "requires_approval"]


class ApprovalFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=ApprovalStatus.choices)
    kind = django_filters.ChoiceFilter(choices=ApprovalKind.choices)
    agent = django_filters.NumberFilter(field_name="agent_id", label="Agent")

    class Meta:
        model = ApprovalRequest
        fields = ["status", "kind", "agent"]

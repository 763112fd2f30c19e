"""Filters shared by the console lists and the API (one FilterSet per list)."""

import django_filters
from django.db.models import Q

from tools.choices import Risk, ServerStatus, ToolState, Transport
from tools.models import MCPServer, Tool


class ServerFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search")
    status = django_filters.ChoiceFilter(choices=ServerStatus.choices)
    transport = django_filters.ChoiceFilter(choices=Transport.choices)

    class Meta:
        model = MCPServer
        fields = ["q", "status", "transport"]

    def search(self, queryset, name, value):
        return queryset.filter(
            Q(name__icontains=value) | Q(description__icontains=value) | Q(url__icontains=value)
        )


class ToolFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search")
    server = django_filters.NumberFilter(field_name="server_id", label="Server")
    risk = django_filters.ChoiceFilter(choices=Risk.choices)
    state = django_filters.ChoiceFilter(choices=ToolState.choices)

    class Meta:
        model = Tool
        fields = ["q", "server", "risk", "state"]

    def search(self, queryset, name, value):
        return queryset.filter(
            Q(name__icontains=value) | Q(title__icontains=value) | Q(description__icontains=value)
        )

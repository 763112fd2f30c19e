"""Filters shared by the console lists and the API (one FilterSet per list)."""

import django_filters
from django.db.models import Q

from orgs.choices import AuditChannel, InvitationStatus, Role
from orgs.models import AuditEvent, Invitation, Membership


class MemberFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search")
    role = django_filters.ChoiceFilter(choices=Role.choices)

    class Meta:
        model = Membership
        fields = ["q", "role"]

    def search(self, queryset, name, value):
        return queryset.filter(Q(user__email__icontains=value) | Q(user__name__icontains=value))


class InvitationFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=InvitationStatus.choices, method="by_status")

    class Meta:
        model = Invitation
        fields = ["status"]

    def by_status(self, queryset, name, value):
        from django.utils import timezone

        now = timezone.now()
        if value == InvitationStatus.EXPIRED:
            return queryset.filter(
                Q(status=InvitationStatus.EXPIRED)
                | Q(status=InvitationStatus.PENDING, expires_at__lte=now)
            )
        if value == InvitationStatus.PENDING:
            return queryset.filter(status=value, expires_at__gt=now)
        return queryset.filter(status=value)


class AuditFilter(django_filters.FilterSet):
    actor = django_filters.CharFilter(method="by_actor", label="Actor (email)")
    action = django_filters.CharFilter(
        method="by_action", label="Action", help_text="Exact, or a prefix ending in '.'."
    )
    channel = django_filters.ChoiceFilter(choices=AuditChannel.choices)
    target_type = django_filters.CharFilter(label="Target type")
    target_id = django_filters.CharFilter(label="Target id")
    target = django_filters.CharFilter(
        field_name="target_label", lookup_expr="icontains", label="Target"
    )
    since = django_filters.IsoDateTimeFilter(
        field_name="created_at", lookup_expr="gte", label="From"
    )
    until = django_filters.IsoDateTimeFilter(
        field_name="created_at", lookup_expr="lt", label="Until"
    )

    class Meta:
        model = AuditEvent
        fields = [
            "actor",
            "action",
            "channel",
            "target_type",
            "target_id",
            "target",
            "since",
            "until",
        ]

    def by_actor(self, queryset, name, value):
        return queryset.filter(actor_label__iexact=value.strip())

    def by_action(self, queryset, name, value):
        value = value.strip()
        if value.endswith("."):
            return queryset.filter(action__startswith=value)
        return queryset.filter(action=value)

"""The base console view and API viewset re-check what a write produced."""

import pytest
from django import forms
from django.core.exceptions import PermissionDenied
from django.test import RequestFactory
from rest_framework import exceptions

from argus.api.viewsets import OrgViewSet
from argus.generic import ServiceFormView
from orgs import services
from orgs.models import Team
from orgs.permissions import Principal


class NameForm(forms.Form):
    name = forms.CharField()


def _write_in_the_other_organization(personas):
    """A faulty service: it writes a row the caller will not be able to see."""

    def service(principal, name):
        return services.create_team(Principal.system(personas.org_b), name)

    return service


def test_console_write_outside_the_users_reach_is_rolled_back(personas):
    faulty = _write_in_the_other_organization(personas)

    class FaultyView(ServiceFormView):
        form_class = NameForm
        template_name = "orgs/team_form.html"
        success_url = "/"

        def perform(self, form):
            self.written = faulty(self.principal, form.cleaned_data["name"])

    request = RequestFactory().post("/x/", {"name": "Leaked"})
    request.user = personas.admin
    request.organization = personas.org_a
    request.session = {}
    with pytest.raises(PermissionDenied, match="outside what you may see"):
        FaultyView.as_view()(request)
    assert not Team.objects.filter(name="Leaked").exists()


def test_api_write_outside_the_callers_reach_is_rolled_back(personas):
    view = OrgViewSet()
    view.queryset = Team.objects.all()
    view.principal = personas.principal("ADMIN")
    with pytest.raises(exceptions.PermissionDenied, match="outside what you may see"):
        view.write(_write_in_the_other_organization(personas), "Leaked")
    assert not Team.objects.filter(name="Leaked").exists()
    team = view.write(services.create_team, "Kept")
    assert Team.objects.filter(pk=team.pk, organization=personas.org_a).exists()

"""Base console views: apps declare attributes, permission is enforced here once.

- :class:`OrgViewMixin` resolves the acting principal (the signed-in user in the
  current organization), narrows ``queryset`` with ``for_user(principal, "view")`` so an
  object the user may not see is a 404, and checks ``required_action`` on the object
  (403 when visible but not allowed).
- :class:`ObjectListView` filters (one django-filter FilterSet, shared with the API)
  and paginates; the same view answers htmx with just the table fragment.
- :class:`ServiceFormView` and :class:`ObjectActionView` call a service, show its
  error on the form (or as a message), and answer htmx with ``HX-Location``.
- Form choice fields are narrowed to what the user may see (:func:`restrict_form_fields`).
"""

from __future__ import annotations

import contextlib

from django import forms
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.generic import FormView, ListView, TemplateView, View
from django.views.generic.detail import SingleObjectMixin

from argus.errors import ServiceError
from orgs import services
from orgs.forms import GrantForm
from orgs.middleware import request_principal
from orgs.permissions import (
    Action,
    OrgQuerySet,
    can,
    can_create,
    can_list,
    denial,
    still_visible,
)


class OrgViewMixin(LoginRequiredMixin):
    """Signed-in member of the current organization; ``self.principal`` is set."""

    queryset = None
    required_action = Action.VIEW

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        self.principal = request_principal(request, channel="console")
        if self.principal is None or not self.principal.is_member:
            return render(request, "generic/no_organization.html", status=403)
        return super().dispatch(request, *args, **kwargs)

    def get_queryset(self):
        return self.queryset.all().for_user(self.principal, Action.VIEW)

    def check_object(self, obj):
        """403 unless the principal may do ``required_action`` on the visible ``obj``."""
        if self.required_action != Action.VIEW and not can(
            self.principal, self.required_action, obj
        ):
            raise PermissionDenied(denial(self.principal, self.required_action, type(obj)))
        return obj

    def get_object(self, queryset=None):
        obj = SingleObjectMixin.get_object(self, queryset)
        return self.check_object(obj)

    def check_still_visible(self, obj) -> None:
        """Raise ``PermissionDenied`` if ``obj`` still exists but the user may no longer see it."""
        if obj is not None and not still_visible(self.principal, obj):
            raise PermissionDenied("The result would be outside what you may see.")

    def redirect(self, url: str) -> HttpResponse:
        """A redirect that htmx follows as a full navigation."""
        if getattr(self.request, "htmx", False):
            response = HttpResponse(status=204)
            response["HX-Location"] = url
            return response
        return HttpResponseRedirect(url)


def require_listing(principal, model) -> None:
    """403 unless a list of ``model`` could show the principal anything (``can_list``)."""
    if not can_list(principal, model):
        raise PermissionDenied(
            f"Your role does not allow you to see {model._meta.verbose_name_plural}."
        )


class ObjectListView(OrgViewMixin, ListView):
    """A filtered, paginated list; htmx requests get ``partial_template_name`` only."""

    filterset_class = None
    paginate_by = 50
    partial_template_name = None

    def get(self, request, *args, **kwargs):
        require_listing(self.principal, self.queryset.model)
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        queryset = super().get_queryset()
        self.filterset = None
        if self.filterset_class is not None:
            self.filterset = self.filterset_class(self.request.GET or None, queryset=queryset)
            if self.filterset.is_bound:
                # Bad filters show their errors over an empty list, never the unfiltered one.
                queryset = self.filterset.qs if self.filterset.is_valid() else queryset.none()
        return queryset

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["filterset"] = self.filterset
        query = self.request.GET.copy()
        query.pop("page", None)
        context["query_without_page"] = query.urlencode()
        context["can_create"] = can_create(self.principal, self.queryset.model)
        return context

    def get_template_names(self):
        htmx = getattr(self.request, "htmx", None)
        if htmx and not htmx.boosted and self.partial_template_name:
            return [self.partial_template_name]
        return super().get_template_names()


def restrict_form_fields(form: forms.BaseForm, principal) -> None:
    """Narrow every model choice field to the rows the principal may see."""
    for field in form.fields.values():
        queryset = getattr(field, "queryset", None)
        if isinstance(queryset, OrgQuerySet):
            field.queryset = queryset.for_user(principal, Action.VIEW)


class ServiceFormView(OrgViewMixin, FormView):
    """A form whose valid data goes to a service (``perform``).

    A :class:`ServiceError` becomes a form error (on its field when named); a
    permission refusal is a 403. On success, ``perform`` returns a response or
    ``None`` to redirect to ``get_success_url()`` with ``success_message``. The
    write runs in one transaction and is re-checked: the object it wrote
    (``self.written``, or the object of an :class:`ObjectFormView`) must still be
    visible to the user, or everything is rolled back with a 403.
    """

    success_message = ""
    object = None
    written = None

    def get_form(self, form_class=None):
        form = super().get_form(form_class)
        restrict_form_fields(form, self.principal)
        return form

    def form_valid(self, form):
        try:
            with transaction.atomic():
                response = self.perform(form)
                self.check_still_visible(self.written or self.object)
        except ServiceError as exc:
            if exc.field and exc.field in form.fields:
                form.add_error(exc.field, exc.message)
            else:
                form.add_error(None, exc.message)
            return self.form_invalid(form)
        if response is not None:
            return response
        if self.success_message:
            messages.success(self.request, self.success_message)
        return self.redirect(self.get_success_url())

    def perform(self, form):  # pragma: no cover - every subclass defines it
        raise NotImplementedError


class ObjectCreateView(ServiceFormView):
    """A form that creates a ``create_model`` row: those who may not create one get a
    403 before the form, not after filling it in."""

    create_model = None

    def get(self, request, *args, **kwargs):
        services.require_create(self.principal, self.create_model)
        return super().get(request, *args, **kwargs)

    def post(self, request, *args, **kwargs):
        services.require_create(self.principal, self.create_model)
        return super().post(request, *args, **kwargs)


class ObjectFormView(ServiceFormView, SingleObjectMixin):
    """A service form about one object the principal may see and act on."""

    def setup_object(self):
        if self.object is None:
            self.object = self.get_object()

    def get(self, request, *args, **kwargs):
        self.setup_object()
        return super().get(request, *args, **kwargs)

    def post(self, request, *args, **kwargs):
        self.setup_object()
        return super().post(request, *args, **kwargs)


class ObjectActionView(OrgViewMixin, SingleObjectMixin, View):
    """A POST-only action on one object: ``perform(obj)`` calls a service in one
    transaction, re-checked like :class:`ServiceFormView`; a refusal by the service
    (an error or a permission it denies) becomes an error message, and the user goes
    back to ``get_success_url()``."""

    http_method_names = ["post"]
    success_message = ""
    # False for actions whose service commits what it records on the way (a health
    # check, a sync error) even when it then reports a failure: nothing to roll back.
    atomic = True

    def post(self, request, *args, **kwargs):
        self.object = self.get_object()
        try:
            with transaction.atomic() if self.atomic else contextlib.nullcontext():
                response = self.perform(self.object)
                self.check_still_visible(self.object)
        except ServiceError as exc:
            messages.error(request, exc.message)
            return self.redirect(self.get_success_url())
        except PermissionDenied as exc:
            messages.error(request, str(exc) or "You are not allowed to do this.")
            return self.redirect(self.get_success_url())
        if response is not None:
            return response
        if self.success_message:
            messages.success(request, self.success_message.format(object=self.object))
        return self.redirect(self.get_success_url())

    def perform(self, obj):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def get_success_url(self):  # pragma: no cover - every subclass defines it
        raise NotImplementedError


class ObjectGrantsView(OrgViewMixin, SingleObjectMixin, TemplateView):
    """The "Access" page of an object that carries per-object grants: who holds which
    action on it beyond their role, and (for ``manage`` holders) a form to grant or
    revoke. Subclasses declare ``queryset`` (or override ``get_object``) and
    ``back_url_name`` / ``back_label`` for the breadcrumb."""

    template_name = "generic/grants.html"
    back_url_name = None
    back_label = ""

    def get_grants_object(self):
        """The object (a 404 outside the user's reach), for ``manage`` holders only: who
        holds what is for those who decide it."""
        obj = self.get_object()
        if not can(self.principal, Action.MANAGE, self.principal.organization):
            raise PermissionDenied("Only admins (or people granted 'manage') can see grants.")
        return obj

    def get(self, request, *args, **kwargs):
        self.object = self.get_grants_object()
        return self.render_to_response(self.get_context_data())

    def post(self, request, *args, **kwargs):
        self.object = self.get_grants_object()
        form = GrantForm(request.POST, principal=self.principal)
        if not form.is_valid():
            return self.render_to_response(self.get_context_data(form=form), status=400)
        revoking = "revoke" in request.POST
        try:
            if revoking:
                services.revoke_grant(
                    self.principal, form.cleaned_data["action"], self.object, **form.holder_kwargs()
                )
            else:
                services.grant(
                    self.principal, form.cleaned_data["action"], self.object, **form.holder_kwargs()
                )
        except ServiceError as exc:
            form.add_error(None, exc.message)
            return self.render_to_response(self.get_context_data(form=form), status=exc.status)
        messages.success(request, "Grant removed." if revoking else "Grant added.")
        return self.redirect(request.path)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["grants"] = services.grants_on(self.object)
        context.setdefault("form", GrantForm(principal=self.principal))
        context["back_url"] = reverse(self.back_url_name) if self.back_url_name else None
        context["back_label"] = self.back_label
        return context

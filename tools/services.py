"""Every write of the tools app: servers, their health, the catalog and its drift.

Callers (console, API, admin, Celery tasks, commands) pass the acting principal; each
function checks permission, writes in one transaction with its audit event, and
publishes realtime events and pool invalidations on commit.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import referencing
import referencing.exceptions
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import close_old_connections, connection, transaction
from django.db.models import Q
from django.utils import timezone

from argus import events
from argus.crypto import DecryptionError
from argus.errors import Conflict, ServiceError
from orgs import audit
from orgs.choices import Limit
from orgs.permissions import Action, Principal
from orgs.services import (
    enforce_limit,
    lock_organization,
    require,
    require_create,
    require_session,
)
from tools import signals
from tools.choices import TRANSPORT_SCHEMES, Risk, ServerStatus, ToolState
from tools.choices import Transport as TransportChoice
from tools.mcp import operations
from tools.mcp.connection import (
    ConnectionSpec,
    UnknownSecret,
    references,
    spec_for,
    substitute,
)
from tools.mcp.errors import MCPClientError
from tools.mcp.pool import get_pool
from tools.models import CONNECTION_FIELDS, MCPServer, Prompt, Resource, ServerCheck, Tool
from tools.network import check_stdio_allowed, check_url

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Headers the transports set themselves; a configuration may not override them.
RESERVED_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "upgrade"}
MAX_ITEMS = 100
MAX_VALUE = 8000
CHECK_INTERVAL_RANGE = (10, 86400)
TIMEOUT_RANGE = (1, 300)
# Recent checks that decide DEGRADED: any failure among them.
RECENT_CHECKS = 5

SERVER_FIELDS = (
    "name",
    "description",
    "transport",
    "command",
    "args",
    "env",
    "cwd",
    "url",
    "headers",
    "enabled",
    "check_interval_s",
    "timeout_s",
)


# --- validation -------------------------------------------------------------------------------
def _string_map(value: Any, field: str, *, names: re.Pattern, what: str) -> dict[str, str]:
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise ServiceError(f"{what} must be a mapping of names to strings.", field=field)
    if len(value) > MAX_ITEMS:
        raise ServiceError(f"At most {MAX_ITEMS} {what} entries.", field=field)
    cleaned = {}
    for name, item in value.items():
        if not isinstance(name, str) or not names.match(name):
            raise ServiceError(f"{name!r} is not a valid {what} name.", field=field)
        if not isinstance(item, str | int | float) or isinstance(item, bool):
            raise ServiceError(f"The value of {name} must be a string.", field=field)
        item = str(item)
        if len(item) > MAX_VALUE:
            raise ServiceError(f"The value of {name} is too long.", field=field)
        if "\x00" in item or (field == "headers" and ("\r" in item or "\n" in item)):
            raise ServiceError(f"The value of {name} contains a forbidden character.", field=field)
        cleaned[name] = item
    return cleaned


CREDENTIAL_WORDS = {
    "token", "secret", "secrets", "password", "passwd", "pwd", "apikey", "credential",
    "credentials", "authorization", "cookie", "bearer",
}  # fmt: skip
CREDENTIAL_PAIRS = {("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key")}


def names_a_credential(name: str) -> bool:
    """Whether a header or variable name says it carries a credential (``Authorization``,
    ``X-API-Key``, ``GITHUB_TOKEN``…), by whole words, not substrings."""
    words = [w.lower() for w in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", name)]
    if words and words[-1] in {"path", "file", "dir", "url", "name", "id", "type"}:
        return False  # where a credential is, or what it is called: not the credential
    return bool(CREDENTIAL_WORDS & set(words)) or any(
        pair in CREDENTIAL_PAIRS for pair in itertools.pairwise(words)
    )


def _refuse_literal_credentials(mapping: dict[str, str], field: str, what: str) -> None:
    """Credentials typed into headers or the environment would be shown to everyone who
    may view the server: they belong in secrets, referred to as ``${NAME}``."""
    for name, value in mapping.items():
        if value and names_a_credential(name) and not references(value):
            raise ServiceError(
                f"The {what} {name} looks like a credential: store the value as a secret "
                f"and write ${{NAME}} here (headers and variables are shown to every member "
                "who may view the server; secrets never are).",
                field=field,
            )


def _clean_args(value: Any) -> list[str]:
    if value in (None, ""):
        return []
    if not isinstance(value, list) or not all(
        isinstance(arg, str | int | float) and not isinstance(arg, bool) for arg in value
    ):
        raise ServiceError("Arguments must be a list of strings.", field="args")
    if len(value) > MAX_ITEMS:
        raise ServiceError(f"At most {MAX_ITEMS} arguments.", field="args")
    cleaned = [str(arg) for arg in value]
    if any("\x00" in arg or len(arg) > MAX_VALUE for arg in cleaned):
        raise ServiceError("An argument is too long or contains a NUL byte.", field="args")
    return cleaned


def _clean_int(value: Any, field: str, label: str, bounds: tuple[int, int]) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ServiceError(f"{label} must be a whole number of seconds.", field=field) from None
    if isinstance(value, bool) or not bounds[0] <= number <= bounds[1]:
        raise ServiceError(
            f"{label} must be between {bounds[0]} and {bounds[1]} seconds.", field=field
        )
    return number


def _clean_name(organization, name: Any, exclude_pk: int | None) -> str:
    name = (name or "").strip() if isinstance(name, str) else ""
    if not name:
        raise ServiceError("A server needs a name.", field="name")
    if len(name) > 100:
        raise ServiceError("Names are at most 100 characters.", field="name")
    clash = MCPServer.objects.filter(organization=organization, name__iexact=name)
    if exclude_pk is not None:
        clash = clash.exclude(pk=exclude_pk)
    if clash.exists():
        raise ServiceError("A server with this name already exists.", field="name")
    return name


def _merge_secrets(current: dict[str, str], changes: Any) -> dict[str, str]:
    """Apply write-only secret changes: a value sets or replaces, ``None`` removes."""
    if changes in (None, ""):
        return dict(current)
    if not isinstance(changes, dict):
        raise ServiceError(
            "Secrets must be a mapping of names to values (null removes one).", field="secrets"
        )
    merged = dict(current)
    for name, value in changes.items():
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ServiceError(
                f"{name!r} is not a valid secret name (letters, digits and _).", field="secrets"
            )
        if value is None:
            merged.pop(name, None)
        elif not isinstance(value, str) or value == "" or len(value) > MAX_VALUE:
            raise ServiceError(f"The secret {name} needs a non-empty value.", field="secrets")
        elif not value.isprintable():
            # A pasted trailing newline, say: it would break the header it goes into, and
            # the HTTP library's error would quote the whole value.
            raise ServiceError(
                f"The secret {name} contains a line break or another control character; "
                "enter the value without it.",
                field="secrets",
            )
        else:
            merged[name] = value
    if len(merged) > MAX_ITEMS:
        raise ServiceError(f"At most {MAX_ITEMS} secrets.", field="secrets")
    return merged


def clean_config(organization, data: dict, *, instance: MCPServer | None = None) -> dict:
    """Validate a server configuration (a full one, or ``instance`` with changes).

    Returns the cleaned fields plus ``secrets`` (the whole decrypted mapping). Raises
    :class:`ServiceError` naming the field and the rule, SSRF refusals included.
    """
    current = {name: getattr(instance, name) for name in SERVER_FIELDS} if instance else {}
    merged = {**current, **{key: value for key, value in data.items() if key in SERVER_FIELDS}}
    transport = merged.get("transport")
    if transport not in TransportChoice.values:
        raise ServiceError(
            f"Unknown transport {transport!r}; choose one of: {', '.join(TransportChoice.values)}.",
            field="transport",
        )
    cleaned = {
        "name": _clean_name(organization, merged.get("name"), instance.pk if instance else None),
        "description": str(merged.get("description") or "")[:5000],
        "transport": transport,
        "enabled": bool(merged.get("enabled", True)),
        "check_interval_s": _clean_int(
            merged.get("check_interval_s", 60),
            "check_interval_s",
            "Check interval",
            CHECK_INTERVAL_RANGE,
        ),
        "timeout_s": _clean_int(merged.get("timeout_s", 10), "timeout_s", "Timeout", TIMEOUT_RANGE),
    }
    if cleaned["timeout_s"] >= cleaned["check_interval_s"]:
        raise ServiceError(
            "The timeout must be shorter than the check interval.", field="timeout_s"
        )
    if transport == TransportChoice.STDIO:
        check_stdio_allowed()
        command = str(merged.get("command") or "").strip()
        if not command:
            raise ServiceError("A stdio server needs a command to run.", field="command")
        if len(command) > 500 or "\x00" in command:
            raise ServiceError("The command is too long or contains a NUL byte.", field="command")
        cwd = str(merged.get("cwd") or "").strip()
        if cwd and not os.path.isabs(cwd):
            raise ServiceError("The working directory must be an absolute path.", field="cwd")
        cleaned.update(
            command=command,
            args=_clean_args(merged.get("args")),
            env=_string_map(merged.get("env"), "env", names=NAME_RE, what="environment variable"),
            cwd=cwd[:500],
            url="",
            headers={},
        )
    else:
        url = str(merged.get("url") or "").strip()
        if not url:
            raise ServiceError("A network server needs a URL.", field="url")
        if len(url) > 2000:
            raise ServiceError("The URL is too long.", field="url")
        check_url(url, schemes=TRANSPORT_SCHEMES[transport])
        headers = _string_map(merged.get("headers"), "headers", names=HEADER_NAME_RE, what="header")
        reserved = sorted(name for name in headers if name.lower() in RESERVED_HEADERS)
        if reserved:
            raise ServiceError(f"Argus sets {', '.join(reserved)} itself.", field="headers")
        cleaned.update(command="", args=[], env={}, cwd="", url=url, headers=headers)
    _refuse_literal_credentials(cleaned["env"], "env", "environment variable")
    _refuse_literal_credentials(cleaned["headers"], "headers", "header")
    supplied = data.get("secrets") if isinstance(data.get("secrets"), dict) else {}
    current_secrets = _stored_secrets(instance, supplied)
    secrets = _merge_secrets(current_secrets, data.get("secrets"))
    referenced = set()
    for field, mapping in (("env", cleaned["env"]), ("headers", cleaned["headers"])):
        for name, value in mapping.items():
            missing = sorted(references(value) - set(secrets))
            if missing:
                raise ServiceError(
                    f"{name} refers to ${{{missing[0]}}}, but there is no secret {missing[0]}.",
                    field=field,
                )
            referenced |= references(value)
            if field == "headers" and not substitute(value, secrets, name).isascii():
                raise ServiceError(
                    f"The header {name} would hold characters HTTP headers cannot carry.",
                    field="headers",
                )
    if instance is not None and destination(instance) != destination(cleaned):
        # Secrets go only where they were given for: a new destination needs them again.
        kept = sorted(name for name in referenced if not supplied.get(name))
        if kept:
            raise ServiceError(
                "This changes where the server's secrets are sent; enter the value of "
                f"{', '.join(kept)} again (stored secrets only go to the destination they "
                "were entered for).",
                field="secrets",
            )
    cleaned["secrets"] = secrets
    return cleaned


def destination(config) -> tuple:
    """Where a configuration sends its secrets: the URL's origin, or what runs (command,
    arguments, directory, environment) for a stdio server. ``config`` is a server or a
    mapping of its fields."""
    get = config.get if isinstance(config, dict) else lambda key: getattr(config, key)
    if get("transport") == TransportChoice.STDIO:
        return ("stdio", get("command"), tuple(get("args") or ()), get("cwd"),
                tuple(sorted((get("env") or {}).items())))  # fmt: skip
    parts = urlsplit(get("url") or "")
    return (get("transport"), parts.scheme, (parts.hostname or "").lower(), parts.port)


def _stored_secrets(instance: MCPServer | None, supplied: dict) -> dict[str, str]:
    """The server's current secrets; when they cannot be decrypted any more (the key
    that encrypted them is gone), none, provided the caller enters new ones."""
    if instance is None:
        return {}
    try:
        return instance.decrypted_secrets()
    except DecryptionError as exc:
        if not supplied:
            raise ServiceError(
                f"The stored secrets cannot be decrypted ({exc}); enter them again.",
                field="secrets",
                code="undecryptable",
            ) from None
        return {}


def _secret_changes(before: dict[str, str], after: dict[str, str]) -> dict[str, list[str]]:
    """Which secret names were added, replaced or removed (never their values)."""
    changes = {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "replaced": sorted(
            name for name in set(before) & set(after) if before[name] != after[name]
        ),
    }
    return {key: names for key, names in changes.items() if names}


def _store_secrets(server: MCPServer, secrets: dict[str, str]) -> None:
    field = MCPServer._meta.get_field("secrets")
    server.secrets = field.encrypt(secrets) if secrets else ""
    server.secret_names = sorted(secrets)


def _publish_on_server_topics(server_id: int, organization_id: int, type: str, payload: dict):
    """An event on ``org`` and on ``server:<id>``, after commit."""
    events.publish("org", type, payload, organization=organization_id)
    events.publish(f"server:{server_id}", type, payload, organization=organization_id)


def _publish_server(server: MCPServer, type: str, data: dict | None = None) -> None:
    payload = {"id": server.pk, "name": server.name, **(data or {})}
    _publish_on_server_topics(server.pk, server.organization_id, type, payload)


def _publish_tool(tool: Tool, type: str) -> None:
    payload = {"id": tool.pk, "name": tool.name, "server": tool.server_id, "state": tool.state}
    _publish_on_server_topics(tool.server_id, tool.organization_id, type, payload)


def _invalidate_on_commit(server_id: int) -> None:
    transaction.on_commit(lambda: get_pool().invalidate(server_id), robust=True)


# --- servers ----------------------------------------------------------------------------------
def create_server(principal: Principal, **data) -> MCPServer:
    """Register a server (``change``; counts against the plan's server limit)."""
    require_create(principal, MCPServer)
    organization = principal.organization
    cleaned = clean_config(organization, data)
    secrets = cleaned.pop("secrets")
    with transaction.atomic():
        lock_organization(organization)
        enforce_limit(organization, Limit.SERVERS)
        server = MCPServer(
            organization=organization,
            created_by=principal.user,
            next_check_at=timezone.now(),
            **cleaned,
        )
        _store_secrets(server, secrets)
        server.save()
        audit.record(
            principal,
            "server.create",
            server,
            changes={
                **{
                    key: [None, value]
                    for key, value in cleaned.items()
                    if value not in ("", [], {})
                },
                **({"secrets": _secret_changes({}, secrets)} if secrets else {}),
            },
        )
        _publish_server(server, "server.created", {"transport": server.transport})
        transaction.on_commit(lambda: _enqueue_refresh(server.pk), robust=True)
    return server


def update_server(principal: Principal, server: MCPServer, **data) -> MCPServer:
    """Change a server's configuration (``change``). Secrets are write-only: a value
    sets or replaces one, ``None`` removes it, names left out stay."""
    require(principal, Action.CHANGE, server)
    cleaned = clean_config(server.organization, data, instance=server)
    secrets = cleaned.pop("secrets")
    with transaction.atomic():
        server = MCPServer.objects.select_for_update().get(pk=server.pk)
        try:
            before_secrets = server.decrypted_secrets()
        except DecryptionError:
            before_secrets = {}  # replaced by what clean_config required to be entered
        changes = {
            key: [getattr(server, key), value]
            for key, value in cleaned.items()
            if getattr(server, key) != value
        }
        secret_changes = _secret_changes(before_secrets, secrets)
        if not changes and not secret_changes:
            return server
        for key, value in cleaned.items():
            setattr(server, key, value)
        if secret_changes:
            _store_secrets(server, secrets)
        reconnect = bool(secret_changes) or any(key in CONNECTION_FIELDS for key in changes)
        if reconnect:
            server.config_version += 1
            server.next_check_at = timezone.now()
        server.save()
        audit.record(
            principal,
            "server.update",
            server,
            changes={**changes, **({"secrets": secret_changes} if secret_changes else {})},
        )
        _publish_server(server, "server.updated", {"fields": sorted([*changes, *secret_changes])})
        if reconnect:
            _invalidate_on_commit(server.pk)
            transaction.on_commit(lambda: _enqueue_refresh(server.pk), robust=True)
    return server


def delete_server(principal: Principal, server: MCPServer) -> None:
    """Remove a server with its catalog and health history (``change``)."""
    require(principal, Action.CHANGE, server)
    with transaction.atomic():
        audit.record(principal, "server.delete", server, changes={"name": [server.name, None]})
        _publish_server(server, "server.deleted")
        server_id = server.pk
        server.delete()
        _invalidate_on_commit(server_id)


def set_maintenance(
    principal: Principal, server: MCPServer, on: bool, reason: str = ""
) -> MCPServer:
    """Put a server in maintenance (no checks, shown as such) or take it out (``change``)."""
    require(principal, Action.CHANGE, server)
    reason = (reason or "").strip()[:500]
    with transaction.atomic():
        server = MCPServer.objects.select_for_update().get(pk=server.pk)
        if on == (server.status == ServerStatus.MAINTENANCE):
            raise Conflict(
                "The server is already in maintenance."
                if on
                else "The server is not in maintenance."
            )
        before = server.status
        server.status = ServerStatus.MAINTENANCE if on else ServerStatus.UNKNOWN
        server.last_error = reason if on else ""
        server.next_check_at = None if on else timezone.now()
        server.save(update_fields=["status", "last_error", "next_check_at", "updated_at"])
        audit.record(
            principal,
            "server.maintenance",
            server,
            changes={"status": [before, server.status], **({"reason": reason} if reason else {})},
        )
        _publish_status(server, before)
    return server


def _publish_status(server: MCPServer, before: str) -> None:
    _publish_server(
        server,
        "server.status",
        {
            "status": server.status,
            "previous": before,
            "latency_ms": server.last_latency_ms,
            "error": server.last_error,
        },
    )


# --- connection tests and health --------------------------------------------------------------
def transient_spec(
    organization, data: dict, *, instance: MCPServer | None = None
) -> ConnectionSpec:
    """A connection spec for a configuration not saved yet ("test connection" in the
    form), validated like a save."""
    cleaned = clean_config(organization, data, instance=instance)
    secrets = cleaned.pop("secrets")
    # Never saved: id 0 and version 0 keep it apart from every pooled session.
    server = MCPServer(organization=organization, pk=0, config_version=0, **cleaned)
    _store_secrets(server, secrets)
    return _spec(server)


def test_configuration(principal: Principal, data: dict, *, instance: MCPServer | None = None):
    """Test a configuration before saving it (``change`` on the server, or creating)."""
    if instance is not None:
        require(principal, Action.CHANGE, instance)
    else:
        require_create(principal, MCPServer)
    spec = transient_spec(principal.organization, data, instance=instance)
    result = operations.test_connection(spec)
    # Connecting somewhere with the organization's secrets is worth a line in the log.
    with transaction.atomic():
        audit.record(
            principal,
            "server.test_config",
            instance,
            target_label=instance.name if instance else spec.name,
            changes={
                "transport": spec.transport,
                "destination": spec.url or spec.command,
                "outcome": "ok" if result.ok else result.reason or "failed",
            },
        )
    return result


def _spec(server: MCPServer) -> ConnectionSpec:
    try:
        return spec_for(server)
    except UnknownSecret as exc:
        raise ServiceError(str(exc), field="secrets") from None
    except DecryptionError as exc:
        raise ServiceError(
            f"The server's secrets cannot be decrypted ({exc}); enter them again.",
            field="secrets",
            code="undecryptable",
        ) from None


def test_server(principal: Principal, server: MCPServer) -> operations.TestResult:
    """Test a saved server now (``operate``): initialize + list, timings, and its status
    updated from the result (unless in maintenance)."""
    require(principal, Action.OPERATE, server)
    result = operations.test_connection(_spec(server))
    record_check(server.pk, result)
    return result


def derive_status(result: operations.TestResult, recent_failures: int) -> str:
    """ONLINE when it answered in time and the recent checks were fine, DEGRADED when
    slow or some recent checks failed, OFFLINE when it failed now."""
    if not result.ok:
        return ServerStatus.OFFLINE
    slow = (result.latency_ms or 0) > settings.ARGUS_HEALTH_SLOW_MS
    return ServerStatus.DEGRADED if slow or recent_failures else ServerStatus.ONLINE


def record_check(server_id: int, result: operations.TestResult) -> MCPServer | None:
    """Store one check's outcome: history (bounded), status, server info; a status
    change is audited and published. ``None`` when the server is gone."""
    now = timezone.now()
    with transaction.atomic():
        server = (
            MCPServer.objects.select_for_update()
            .select_related("organization")
            .filter(pk=server_id)
            .first()
        )
        if server is None:
            return None
        recent = list(
            server.checks.order_by("-checked_at").values_list("ok", flat=True)[: RECENT_CHECKS - 1]
        )
        before = server.status
        status = before
        if before != ServerStatus.MAINTENANCE:
            status = derive_status(result, recent.count(False))
        ServerCheck.objects.create(
            server=server,
            checked_at=now,
            ok=result.ok,
            status=status,
            latency_ms=result.latency_ms,
            error=operations.without_nul(result.error)[:2000],
        )
        stale = server.checks.order_by("-checked_at").values_list("pk", flat=True)[
            settings.ARGUS_HEALTH_HISTORY :
        ]
        ServerCheck.objects.filter(pk__in=list(stale)).delete()
        server.status = status
        server.last_checked_at = now
        server.last_latency_ms = result.latency_ms
        if before != ServerStatus.MAINTENANCE:  # there it holds the maintenance reason
            server.last_error = operations.without_nul(result.error)[:2000] if not result.ok else ""
        server.next_check_at = (
            None
            if status == ServerStatus.MAINTENANCE
            else now + timedelta(seconds=server.check_interval_s)
        )
        server.check_lease_until = None
        if result.server is not None:
            _store_server_info(server, result.server)
        server.save()
        if status != before:
            audit.record(
                Principal.system(server.organization),
                "server.status",
                server,
                changes={
                    "status": [before, status],
                    **({"error": server.last_error[:500]} if server.last_error else {}),
                },
            )
            _publish_status(server, before)
    return server


def _store_server_info(server: MCPServer, info: operations.ServerInfo) -> None:
    clean = operations.without_nul
    server.server_name = clean(info.name)[:200]
    server.server_version = clean(info.version)[:100]
    server.protocol_version = clean(info.protocol_version)[:40]
    server.capabilities = clean(info.capabilities)
    server.instructions = clean(info.instructions)[:20000]


def due_servers(now=None):
    """Servers whose next check is due and that nobody is checking."""
    now = now or timezone.now()
    return (
        MCPServer.objects.filter(enabled=True, next_check_at__lte=now)
        .exclude(status=ServerStatus.MAINTENANCE)
        .filter(Q(check_lease_until__isnull=True) | Q(check_lease_until__lt=now))
        .order_by("next_check_at")
    )


def claim_check(server_id: int, timeout_s: int, now=None) -> bool:
    """Take the server's check lease (compare-and-swap); False when another holds it."""
    now = now or timezone.now()
    return (
        MCPServer.objects.filter(pk=server_id)
        .filter(Q(check_lease_until__isnull=True) | Q(check_lease_until__lt=now))
        .update(check_lease_until=now + timedelta(seconds=timeout_s * 3 + 60))
        == 1
    )


def run_check(server_id: int) -> MCPServer | None:
    """One health check (the Celery task's body): test and record. The lease taken by
    the dispatcher is released by :func:`record_check`."""
    server = MCPServer.objects.filter(pk=server_id).first()
    if server is None or not server.enabled or server.status == ServerStatus.MAINTENANCE:
        MCPServer.objects.filter(pk=server_id).update(check_lease_until=None)
        return server
    try:
        result = operations.test_connection(_spec(server))
    except ServiceError as exc:  # its secrets are missing or cannot be decrypted
        result = operations.TestResult(ok=False, error=exc.message, reason="config")
    server = record_check(server_id, result)
    if server is not None and catalog_drifted(server, result):
        # A change the server never announced (or announced to nobody listening): what a
        # fresh session sees is the truth, so a warm session listing the old one goes.
        get_pool().invalidate(server.pk)
        try:
            sync_server(Principal.system(server.organization), server)
        except ServiceError as exc:
            logger.warning("re-sync of server %s after a check failed: %s", server_id, exc)
    return server


def catalog_drifted(server: MCPServer, result: operations.TestResult) -> bool:
    """Whether the tools a check listed differ from the catalog of a synced server."""
    if not result.ok or result.tools is None or server.last_synced_at is None:
        return False
    listed = {
        name: definition_hash(tool_definition(item))
        for name, item in listed_tools(result.tools).items()
    }
    known = dict(
        server.tools.exclude(state=ToolState.REMOVED).values_list("name", "definition_hash")
    )
    return listed != known


def dispatch_checks(enqueue) -> list[int]:
    """Claim every due server and hand each to ``enqueue(server_id)``."""
    claimed = []
    for server_id, timeout_s in due_servers().values_list("pk", "timeout_s")[:500]:
        if claim_check(server_id, timeout_s):
            claimed.append(server_id)
            enqueue(server_id)
    return claimed


def _enqueue_refresh(server_id: int) -> None:
    """After a server is created or reconfigured: check it and sync its catalog soon."""
    from tools.tasks import refresh_server

    try:
        refresh_server.delay(server_id)
    except Exception as exc:
        logger.warning("could not enqueue a refresh of server %s: %s", server_id, exc)


# --- the catalog --------------------------------------------------------------------------------
def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def tool_definition(item: dict) -> dict:
    """The hashed part of a tool as listed: name, description, schemas, annotations."""
    return {
        "name": item.get("name", ""),
        "description": item.get("description") or "",
        "inputSchema": item.get("inputSchema") or {},
        "outputSchema": item.get("outputSchema"),
        "annotations": item.get("annotations") or {},
    }


def definition_hash(definition: dict) -> str:
    return hashlib.sha256(canonical_json(definition).encode()).hexdigest()


def derive_risk(annotations: dict) -> str:
    """LOW for read-only tools, MEDIUM for ones declared not destructive, HIGH otherwise
    (MCP tells clients to assume an unannotated tool may destroy)."""
    if annotations.get("readOnlyHint") is True:
        return Risk.LOW
    if annotations.get("destructiveHint") is False:
        return Risk.MEDIUM
    return Risk.HIGH


def listed_tools(items: list[dict]) -> dict[str, dict]:
    """The tools of a listing that the catalog keeps, by name: a name (at most 200
    characters) is required, and the first of two tools with one name wins."""
    kept: dict[str, dict] = {}
    for item in items:
        name = item.get("name")
        if isinstance(name, str) and 0 < len(name) <= 200 and name not in kept:
            kept[name] = item
    return kept


def listed_tool_fields(item: dict, now) -> dict:
    """The model fields of a tool as a server lists it: definition, hash, risk."""
    definition = tool_definition(item)
    annotations = definition["annotations"]
    return {
        "title": str(item.get("title") or annotations.get("title") or "")[:200],
        "description": definition["description"],
        "input_schema": definition["inputSchema"],
        "output_schema": definition["outputSchema"],
        "annotations": annotations,
        "risk": derive_risk(annotations),
        "definition_hash": definition_hash(definition),
        "last_seen_at": now,
    }


def new_tool(server: MCPServer, item: dict, now) -> Tool:
    """A catalog entry (unsaved) for a tool seen for the first time: its definition is
    accepted as it is (pinned), since there is nothing yet to compare it with."""
    fields = listed_tool_fields(item, now)
    return Tool(
        organization_id=server.organization_id,
        server=server,
        name=item["name"],
        first_seen_at=now,
        pinned_hash=fields["definition_hash"],
        pinned_definition=tool_definition(item),
        pinned_at=now,
        state=ToolState.ACTIVE,
        **fields,
    )


@dataclass
class SyncResult:
    """What a sync found."""

    added: list[str]
    changed: list[str]
    removed: list[str]
    tools: int
    resources: int
    prompts: int


def sync_server(principal: Principal, server: MCPServer) -> SyncResult:
    """List the server's tools, resources and prompts and update the catalog (``operate``).

    Raises :class:`ServiceError` (with the server's error) when the server cannot be
    reached; the failure is kept on the server as ``sync_error``.
    """
    require(principal, Action.OPERATE, server)
    server.refresh_from_db()  # the configuration as it is now, not as the caller read it
    if server.status == ServerStatus.MAINTENANCE:
        raise Conflict("The server is in maintenance; take it out of maintenance to sync it.")
    try:
        catalog = operations.list_catalog(_spec(server))
    except MCPClientError as exc:
        MCPServer.objects.filter(pk=server.pk).update(sync_error=exc.message[:2000])
        raise ServiceError(
            f"Could not sync {server.name}: {exc.message}", code=exc.reason
        ) from None
    return apply_catalog(principal, server, catalog)


def _upsert_entries(model, server, items: list[dict], key: str, now, build) -> None:
    """Resources and prompts: create, update, mark removed."""
    existing = {getattr(entry, key): entry for entry in model.objects.filter(server=server)}
    seen = set()
    for item in items:
        fields = build(item)
        ident = fields[key]
        if not ident or ident in seen:
            continue
        seen.add(ident)
        entry = existing.get(ident)
        if entry is None:
            model.objects.create(
                server=server,
                organization_id=server.organization_id,
                first_seen_at=now,
                last_seen_at=now,
                **fields,
            )
        else:
            for name, value in fields.items():
                setattr(entry, name, value)
            entry.last_seen_at = now
            entry.removed = False
            entry.save()
    model.objects.filter(server=server).exclude(**{f"{key}__in": seen}).update(removed=True)


def apply_catalog(
    principal: Principal, server: MCPServer, catalog: operations.Catalog
) -> SyncResult:
    """Fold a listed catalog into the server's entries; drift makes a tool ``changed``."""
    now = timezone.now()
    added, changed, removed = [], [], []
    with transaction.atomic():
        server = MCPServer.objects.select_for_update().get(pk=server.pk)
        # Locked: an acceptance committing meanwhile must not be overwritten.
        existing = {tool.name: tool for tool in server.tools.select_for_update()}
        listed = listed_tools(catalog.tools)
        seen = set(listed)
        for name, item in listed.items():
            fields = listed_tool_fields(item, now)
            digest = fields["definition_hash"]
            tool = existing.get(name)
            if tool is None:
                new_tool(server, item, now).save()
                added.append(name)
                continue
            was_changed_to = tool.definition_hash if tool.state == ToolState.CHANGED else None
            for key, value in fields.items():
                setattr(tool, key, value)
            if digest == tool.pinned_hash:
                tool.state = ToolState.ACTIVE
                tool.changed_at = None
            else:
                tool.state = ToolState.CHANGED
                if was_changed_to != digest:
                    tool.changed_at = now
                    changed.append(name)
            # Never the pinned fields: only an acceptance writes those.
            tool.save(update_fields=[*fields, "state", "changed_at"])
        for name, tool in existing.items():
            if name not in seen and tool.state != ToolState.REMOVED:
                tool.state = ToolState.REMOVED
                tool.save(update_fields=["state"])
                removed.append(name)
        _upsert_entries(
            Resource,
            server,
            catalog.resources,
            "uri",
            now,
            lambda item: {
                "uri": str(item.get("uri") or "")[:2000],
                "name": str(item.get("name") or "")[:200],
                "title": str(item.get("title") or "")[:200],
                "description": item.get("description") or "",
                "mime_type": str(item.get("mimeType") or "")[:200],
            },
        )
        _upsert_entries(
            Prompt,
            server,
            catalog.prompts,
            "name",
            now,
            lambda item: {
                "name": str(item.get("name") or "")[:200],
                "title": str(item.get("title") or "")[:200],
                "description": item.get("description") or "",
                "arguments": item.get("arguments") or [],
            },
        )
        _store_server_info(server, catalog.server)
        server.last_synced_at = now
        server.sync_error = ""
        server.save()
        for name in changed:
            audit.record(
                principal, "tool.changed", existing[name], changes={"state": ["active", "changed"]}
            )
        for name in removed:
            audit.record(principal, "tool.removed", existing[name])
        signals.catalog_applied.send(MCPServer, server=server, principal=principal)
        if added or changed or removed:
            summary = {"added": added, "changed": changed, "removed": removed}
            _publish_server(server, "server.catalog", summary)
            for name in changed:
                _publish_tool(existing[name], "tool.changed")
    return SyncResult(
        added=added,
        changed=changed,
        removed=removed,
        tools=len(seen),
        resources=len(catalog.resources),
        prompts=len(catalog.prompts),
    )


def accept_tool_change(
    principal: Principal, tool: Tool, *, reviewed_hash: str | None = None
) -> Tool:
    """Accept a changed tool's new definition: it becomes the pinned one (``approve``, by
    a person in the console: a definition change is an approval, never an API key's).

    ``reviewed_hash`` is the definition the person looked at; when the tool changed
    again since, nothing is accepted (:class:`Conflict`): they must review the newer one.
    """
    require_session(principal, "Accepting a tool's changed definition")
    require(principal, Action.APPROVE, tool)
    with transaction.atomic():
        tool = Tool.objects.select_for_update().get(pk=tool.pk)
        if tool.state != ToolState.CHANGED:
            raise Conflict(f"{tool.name} has no pending definition change to accept.")
        if reviewed_hash is not None and reviewed_hash != tool.definition_hash:
            raise Conflict(
                f"{tool.name} changed again since this definition was reviewed; review the "
                "current one and accept it."
            )
        before = tool.pinned_hash
        tool.pinned_hash = tool.definition_hash
        tool.pinned_definition = tool.definition()
        tool.pinned_at = timezone.now()
        tool.pinned_by = principal.user
        tool.state = ToolState.ACTIVE
        tool.changed_at = None
        tool.save()
        audit.record(
            principal,
            "tool.accept_change",
            tool,
            changes={"pinned_hash": [before, tool.pinned_hash]},
        )
        signals.tool_change_accepted.send(Tool, tool=tool, principal=principal)
        _publish_tool(tool, "tool.accepted")
    return tool


def schema_validator(
    schema: Any, *, what: str, field: str = "arguments", check_formats: bool = False
):
    """A validator for a JSON Schema given by a server or a person; :class:`ServiceError`
    (naming ``what``, e.g. "the input schema") when Argus cannot check against it.
    ``check_formats``: enforce ``format`` (``email``, ``ipv4``, ``date``…) too, for
    schemas a person wrote as a restriction; a server's own schemas are checked as
    servers check them, without formats."""
    if not isinstance(schema, dict):
        raise ServiceError(f"{what.capitalize()} is not a JSON object.", field=field)
    try:
        validator_class = jsonschema.validators.validator_for(schema)
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ServiceError(
            f"{what.capitalize()} is invalid ({exc.message}); Argus cannot check arguments.",
            field=field,
        ) from None
    except RecursionError:
        raise _too_deep(what, field) from None
    # An empty registry: a $ref to anything outside the schema is an error, never a
    # download (jsonschema would otherwise fetch remote references itself).
    return validator_class(
        schema,
        registry=referencing.Registry(),
        format_checker=validator_class.FORMAT_CHECKER if check_formats else None,
    )


def _too_deep(what: str, field: str) -> ServiceError:
    return ServiceError(
        f"{what.capitalize()} is nested too deeply (or refers to itself endlessly) for Argus "
        "to check arguments.",
        field=field,
    )


def validate_against(
    schema: Any, value: Any, *, what: str, field: str = "arguments", check_formats: bool = False
) -> Any:
    """Check ``value`` against ``schema``; :class:`ServiceError` lists every violation
    with its path, or says why the schema cannot be used."""
    validator = schema_validator(schema, what=what, field=field, check_formats=check_formats)
    try:
        problems = sorted(validator.iter_errors(value), key=lambda error: list(error.path))
    except referencing.exceptions.Unresolvable:
        raise ServiceError(
            f"{what.capitalize()} refers to a definition outside itself; Argus does not fetch "
            "those, so it cannot check arguments.",
            field=field,
        ) from None
    except RecursionError:
        raise _too_deep(what, field) from None
    if problems:
        described = "; ".join(
            f"{'/'.join(str(p) for p in problem.path) or '(arguments)'}: {problem.message}"
            for problem in problems[:10]
        )
        raise ServiceError(f"The arguments do not match {what}: {described}", field=field)
    return value


def validate_arguments(tool: Tool, arguments: Any) -> dict:
    """Check arguments against the tool's input schema; :class:`ServiceError` lists
    every violation with its path."""
    if not isinstance(arguments, dict):
        raise ServiceError("Arguments must be a JSON object.", field="arguments")
    return validate_against(
        tool.input_schema or {"type": "object"}, arguments, what="the input schema"
    )


def call_tool(
    principal: Principal, tool: Tool, arguments: Any, *, timeout: float | None = None
) -> operations.CallResult:
    """Call a tool from the console or the API ("Try it", ``operate``).

    The tool must be active (a changed definition must be accepted first) and its
    server enabled and out of maintenance. Arguments are checked against the input
    schema first. Raises :class:`ServiceError` with the server's error when the call
    fails; a tool's own error is a result with ``is_error``.
    """
    require(principal, Action.OPERATE, tool)
    server = tool.server
    if tool.state == ToolState.REMOVED:
        raise Conflict(f"{tool.name} is no longer offered by {server.name}.")
    if tool.state == ToolState.CHANGED:
        raise Conflict(
            f"{tool.name}'s definition changed since it was accepted; review and accept the "
            "change before calling it."
        )
    if not server.enabled or server.status == ServerStatus.MAINTENANCE:
        raise Conflict(f"{server.name} is disabled or in maintenance.")
    arguments = validate_arguments(tool, arguments)
    if timeout is not None:
        timeout = min(max(float(timeout), 0.1), float(settings.ARGUS_TOOL_CALL_MAX_SECONDS))
    try:
        result = operations.call_tool(_spec(server), tool.name, arguments, timeout=timeout)
    except MCPClientError as exc:
        with transaction.atomic():
            audit.record(
                principal,
                "tool.call",
                tool,
                changes={"outcome": exc.reason, "error": exc.message[:500]},
            )
        raise ServiceError(f"{tool.name} failed: {exc.message}", code=exc.reason) from None
    with transaction.atomic():
        audit.record(
            principal,
            "tool.call",
            tool,
            changes={
                "outcome": "tool_error" if result.is_error else "ok",
                "latency_ms": round(result.latency_ms, 1),
            },
        )
    return result


DEMO_SERVER_NAME = "Argus demo"


def seed_demo_server(organization) -> MCPServer | None:
    """Register the demo MCP server (stdio) in the demo organization and sync it, once.

    ``None`` when stdio servers are turned off. A sync that fails is logged; the server
    stays registered and its health checks will say why.
    """
    if not settings.ARGUS_ALLOW_STDIO:
        return None
    principal = Principal.system(organization)
    server = MCPServer.objects.filter(organization=organization, name=DEMO_SERVER_NAME).first()
    if server is None:
        server = create_server(
            principal,
            name=DEMO_SERVER_NAME,
            description="Deterministic demo tools shipped with Argus (echo, calculate, "
            "weather, slow and failing calls, progress).",
            transport=TransportChoice.STDIO,
            command=sys.executable,
            args=["-m", "tools.demo_server", "--transport", "stdio"],
        )
    if server.last_synced_at is None:
        try:
            record_check(server.pk, operations.test_connection(spec_for(server)))
            sync_server(principal, server)
        except ServiceError as exc:
            logger.warning("could not sync the demo MCP server: %s", exc.message)
        server.refresh_from_db()
    return server


# --- reacting to live sessions ------------------------------------------------------------------
_resyncing: set[int] = set()
_resync_lock = threading.Lock()


def on_server_notification(server_id: int, method: str) -> None:
    """Called by the session pool for every server notification: a changed tool list
    re-syncs that server, in a thread of its own (never on the pool's loop)."""
    if method != "notifications/tools/list_changed":
        return
    with _resync_lock:
        if server_id in _resyncing:
            return
        _resyncing.add(server_id)
    threading.Thread(target=_resync, args=(server_id,), daemon=True, name="mcp-resync").start()


def _resync(server_id: int) -> None:
    try:
        close_old_connections()
        server = MCPServer.objects.select_related("organization").filter(pk=server_id).first()
        if server is not None and server.status != ServerStatus.MAINTENANCE:
            sync_server(Principal.system(server.organization), server)
    except (ServiceError, PermissionDenied) as exc:
        logger.warning("re-sync of server %s after tools/list_changed failed: %s", server_id, exc)
    except Exception:
        logger.exception("re-sync of server %s after tools/list_changed failed", server_id)
    finally:
        with _resync_lock:
            _resyncing.discard(server_id)
        connection.close()  # this thread's own connection

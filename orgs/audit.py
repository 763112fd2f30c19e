"""The tamper-evident audit log: every write service calls :func:`record` inside its
transaction.

Each organization has one chain (events of no organization, such as a failed login
for an unknown address, go to the ``installation`` chain). An event's hash covers
its fields and the previous event's hash, so editing or deleting any row breaks the
chain from there on, and :func:`verify` names the first broken sequence number.
Appends lock the chain's head row, so concurrent writers never fork a chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from orgs.models import AuditChainHead, AuditEvent, Organization
from orgs.permissions import Principal

INSTALLATION_CHAIN = "installation"
HASHED_FIELDS = (
    "organization_id",
    "seq",
    "actor_id",
    "actor_label",
    "api_key_id",
    "channel",
    "action",
    "target_type",
    "target_id",
    "target_label",
    "changes",
    "ip",
    "user_agent",
    "request_id",
    "created_at",
    "prev_hash",
)


# What an export carries: enough to recompute every hash away from Argus.
EXPORT_FIELDS = (*HASHED_FIELDS, "hash")


_IP_FIELD = AuditEvent._meta.get_field("ip")


def chain_key(organization_id: int | None) -> str:
    return f"org:{organization_id}" if organization_id is not None else INSTALLATION_CHAIN


def event_hash(event: AuditEvent) -> str:
    """SHA-256 over the event's hashed fields, as canonical JSON."""
    record = {}
    for name in HASHED_FIELDS:
        value = getattr(event, name)
        if name == "created_at":
            value = value.isoformat(timespec="microseconds")
        record[name] = value
    payload = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def changes_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """``{field: [old, new]}`` for the fields whose value differs."""
    return {
        name: [before.get(name), after.get(name)]
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    }


def record(
    principal: Principal | None,
    action: str,
    target: Any = None,
    *,
    changes: dict[str, Any] | None = None,
    organization: Organization | None = None,
    target_label: str | None = None,
) -> AuditEvent:
    """Append one event to the organization's chain (the principal's by default).

    Call it inside the transaction of the change it describes. ``changes`` is a
    summary of changed fields and must never carry a secret. ``principal`` may be
    ``None`` for an anonymous actor (a failed login); ``organization`` then decides
    the chain.
    """
    if organization is None and principal is not None:
        organization = principal.organization
    organization_id = organization.pk if organization is not None else None
    event = AuditEvent(
        organization_id=organization_id,
        actor=principal.user if principal is not None else None,
        actor_label=principal.label if principal is not None else "",
        api_key=principal.api_key if principal is not None else None,
        channel=principal.channel if principal is not None else "system",
        action=action,
        target_type=_target_type(target),
        target_id=str(target.pk) if target is not None and target.pk is not None else "",
        target_label=(target_label if target_label is not None else str(target or ""))[:254],
        changes=_jsonable(changes or {}),
        # Hashed as the database will store it (IPv4-mapped IPv6 is normalized).
        ip=_IP_FIELD.get_prep_value(principal.ip) if principal is not None else None,
        user_agent=(principal.user_agent if principal is not None else "")[:512],
        request_id=principal.request_id if principal is not None else "",
    )
    with transaction.atomic():
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(
            key=chain_key(organization_id)
        )
        event.seq = head.seq + 1
        event.prev_hash = head.hash
        event.created_at = timezone.now()
        event.hash = event_hash(event)
        event.save(force_insert=True)
        head.seq, head.hash = event.seq, event.hash
        head.save(update_fields=["seq", "hash"])
    return event


def record_for_user(
    user,
    action: str,
    *,
    actor=None,
    channel="console",
    ip=None,
    user_agent="",
    request_id="",
    changes=None,
) -> None:
    """An account event (login, MFA change…) about ``user`` in the chain of each of
    their organizations, or in the installation chain if they belong to none.
    ``actor`` is who did it when it is not the user (staff in the admin)."""
    organizations = list(Organization.objects.filter(memberships__user=user))
    for organization in organizations or [None]:
        principal = Principal(
            organization=organization,
            user=actor or user,
            role=None,
            channel=channel,
            ip=ip,
            user_agent=user_agent,
            request_id=request_id,
        )
        record(principal, action, user, changes=changes, organization=organization)


def _target_type(target: Any) -> str:
    if target is None:
        return ""
    return f"{target._meta.app_label}.{target._meta.model_name}"


def _jsonable(value: Any) -> Any:
    """Changes as JSON would store them, so the hash computed now matches a re-read."""
    return json.loads(json.dumps(value, default=str))


@dataclass
class Break:
    """Where a chain stops verifying."""

    chain: str
    seq: int
    reason: str


def chain_keys(organization: Organization | None = None) -> list[str]:
    """The chains to check: one organization's, or every chain with a head plus every
    organization's (even before its first event); installation first, then by id."""
    if organization is not None:
        return [chain_key(organization.pk)]
    keys = set(AuditChainHead.objects.values_list("key", flat=True))
    keys.update(chain_key(pk) for pk in Organization.objects.values_list("pk", flat=True))
    return sorted(keys, key=_chain_order)


def _chain_order(key: str) -> tuple[int, int]:
    if key == INSTALLATION_CHAIN:
        return (0, 0)
    return (1, int(key.split(":", 1)[1]))


def verify(organization: Organization | None = None) -> list[Break]:
    """Walk every chain (or one organization's) and return every break, chain by chain
    in sequence order; an empty list means the log is intact."""
    return [problem for key in chain_keys(organization) for problem in verify_chain(key)]


def verify_chain(key: str) -> list[Break]:
    """Every break of one chain. Each event is checked on its own (its content against
    its hash, its link against the stored hash before it), so one bad row cannot hide
    another after it."""
    organization_id = None if key == INSTALLATION_CHAIN else int(key.split(":", 1)[1])
    head = AuditChainHead.objects.filter(key=key).first()
    events = AuditEvent.objects.filter(organization_id=organization_id).order_by("seq")
    if head is not None:
        # Events appended while we walk belong to a newer head: check up to this one.
        events = events.filter(seq__lte=head.seq)
    breaks: list[Break] = []
    expected_seq, previous = 1, ""
    for event in _iterate(events):
        if event.seq != expected_seq:
            missing = (
                f"event #{expected_seq} is missing"
                if event.seq == expected_seq + 1
                else f"events #{expected_seq} to #{event.seq - 1} are missing"
            )
            breaks.append(Break(key, expected_seq, missing))
        elif event.prev_hash != previous:
            breaks.append(Break(key, event.seq, "its link to the previous event does not match"))
        if event_hash(event) != event.hash:
            breaks.append(Break(key, event.seq, "its content does not match its hash"))
        previous = event.hash
        expected_seq = event.seq + 1
    last = expected_seq - 1
    head_seq = head.seq if head is not None else 0
    if head_seq > last:
        breaks.append(Break(key, last + 1, f"events #{last + 1} to #{head_seq} are missing"))
    elif head is not None and head.hash != previous:
        breaks.append(Break(key, last, "the chain head does not match the last event"))
    return breaks


def _iterate(events: Iterable[AuditEvent]) -> Iterator[AuditEvent]:
    yield from events.iterator(chunk_size=2000)  # type: ignore[attr-defined]

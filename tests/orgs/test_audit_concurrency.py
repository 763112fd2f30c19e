"""Concurrent writers in one organization keep its audit chain valid (real threads,
real transactions: PostgreSQL row locks in CI, SQLite's immediate transactions here)."""

import threading

import pytest
from django.db import connection

from orgs import audit, services
from orgs.models import AuditEvent
from tests.support.personas import make_personas


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_keep_the_chain_valid():
    personas = make_personas()
    threads, per_thread = 6, 8
    errors = []
    start = threading.Barrier(threads)

    def writer(index):
        try:
            start.wait(10)
            for number in range(per_thread):
                services.create_team(personas.principal("ADMIN"), f"T{index}-{number}")
        except Exception as exc:  # collected and asserted below
            errors.append(repr(exc))
        finally:
            connection.close()

    workers = [threading.Thread(target=writer, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert errors == []
    events = AuditEvent.objects.filter(organization=personas.org_a, action="team.create")
    assert events.count() == threads * per_thread
    seqs = list(
        AuditEvent.objects.filter(organization=personas.org_a)
        .order_by("seq")
        .values_list("seq", flat=True)
    )
    assert seqs == list(range(1, len(seqs) + 1))
    assert audit.verify(personas.org_a) == []
    assert audit.verify() == []

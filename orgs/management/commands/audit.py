"""``argus audit verify``: check that no audit event was edited or deleted."""

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count

from orgs import audit
from orgs.management import bootstrap
from orgs.models import AuditChainHead, AuditEvent, Organization


class Command(BaseCommand):
    help = "Work with the hash-chained audit log."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        verify = actions.add_parser(
            "verify",
            help="walk the audit chains; non-zero exit when one was tampered with",
            description="Walk every audit chain (or one organization's) and name the first "
            "event where each stops verifying.",
        )
        verify.add_argument("--org", metavar="SLUG", help="only this organization's chain")

    def handle(self, *args, action, org=None, **options):
        organization = bootstrap.organization_by_slug(org) if org else None
        breaks: dict[str, list] = {}
        for problem in audit.verify(organization):
            breaks.setdefault(problem.chain, []).append(problem)
        chains = audit.chain_keys(organization)
        slugs = dict(Organization.objects.values_list("pk", "slug"))
        events = AuditEvent.objects.all()
        if organization is not None:
            events = events.filter(organization=organization)
        counts = {
            audit.chain_key(row["organization_id"]): row["events"]
            for row in events.values("organization_id").annotate(events=Count("pk"))
        }
        heads = dict(AuditChainHead.objects.values_list("key", "hash"))
        failed = []
        for chain in chains:
            label = _label(chain, slugs)
            problems = breaks.get(chain)
            if not problems:
                # The head hash, recorded somewhere else, anchors the chain: a rewrite
                # of the whole log from the start would change it.
                head = f" (head {heads[chain][:16]})" if heads.get(chain) else ""
                self.stdout.write(
                    f"{label}: {_plural(counts.get(chain, 0), 'event')} verified{head}"
                )
                continue
            first, *rest = problems
            line = f"{label}: broken at #{first.seq}: {first.reason}"
            for problem in rest:
                line += f"\n    also #{problem.seq}: {problem.reason}"
            failed.append(line)
        if failed:
            raise CommandError(
                f"{_plural(len(failed), 'audit chain')} failed verification "
                "(events were edited or deleted):\n" + "\n".join(failed)
            )
        self.stdout.write(self.style.SUCCESS(f"{_plural(len(chains), 'audit chain')} intact."))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _label(chain: str, slugs: dict[int, str]) -> str:
    if chain == audit.INSTALLATION_CHAIN:
        return chain
    organization_id = int(chain.split(":", 1)[1])
    return f"{chain} ({slugs.get(organization_id, 'deleted organization')})"

"""``argus rotate-encryption-key``: re-encrypt every stored secret under the current key.

The file name is hyphenated so the command reads like the other ``argus`` verbs; Django
finds it like any other command module.
"""

import argparse

from django.core.management.base import BaseCommand, CommandError, DjangoHelpFormatter

from argus import crypto

PROCEDURE = """\
Re-encrypt every value stored under an older key with ARGUS_ENCRYPTION_KEY.

Changing ARGUS_ENCRYPTION_KEY without downtime:
  1. Generate a new key:
       python -c 'import secrets; print(secrets.token_urlsafe(32))'
     On every Argus process (web, worker, beat) set it as ARGUS_ENCRYPTION_KEY and put
     the old key in ARGUS_ENCRYPTION_KEY_FALLBACKS, then restart them. New values are
     written under the new key; old ones still decrypt.
  2. Run `argus rotate-encryption-key`. It re-encrypts row by row while Argus runs and
     never overwrites a value written meanwhile.
  3. Run `argus rotate-encryption-key --check`: it must report 0 values under old keys
     (exit status 0; 1 while any remain).
  4. Remove the old key from ARGUS_ENCRYPTION_KEY_FALLBACKS and restart the processes.
"""


class ProcedureHelpFormatter(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Django's help layout, with the numbered procedure kept as written."""


def batch_size(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


class Command(BaseCommand):
    help = PROCEDURE

    def create_parser(self, prog_name, subcommand, **kwargs):
        kwargs.setdefault("formatter_class", ProcedureHelpFormatter)
        return super().create_parser(prog_name, subcommand, **kwargs)

    def add_arguments(self, parser):
        parser.add_argument(
            "--check",
            action="store_true",
            help="only report what is still under old keys; exit 1 when anything is",
        )
        parser.add_argument(
            "--batch-size",
            type=batch_size,
            default=500,
            metavar="N",
            help="rows read per query (default 500)",
        )

    def handle(self, *args, check, batch_size, **options):
        current = crypto.current_key_id()
        if check:
            counts = crypto.pending()
            for label, count in counts.items():
                self.stdout.write(f"{label}: {_plural(count, 'value')} under old keys")
            total = sum(counts.values())
            if total:
                raise CommandError(
                    f"{_plural(total, 'value')} still under old keys; "
                    "run `argus rotate-encryption-key`"
                )
            self.stdout.write(
                self.style.SUCCESS(f"All encrypted values are under the current key {current}.")
            )
            return
        try:
            rotated = crypto.rotate(batch_size=batch_size)
        except crypto.RotationError as exc:
            self._report(exc.rotated)
            raise CommandError(str(exc)) from None
        self._report(rotated)
        left = sum(crypto.pending().values())
        if left:
            # Only a process still encrypting under the old key writes those.
            raise CommandError(
                f"{_plural(left, 'value')} were written under old keys while this ran: "
                "restart every Argus process with the new ARGUS_ENCRYPTION_KEY and run again"
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"{_plural(sum(rotated.values()), 'value')} re-encrypted; "
                f"all encrypted values are under the current key {current}."
            )
        )

    def _report(self, rotated: dict[str, int]) -> None:
        for label, count in rotated.items():
            self.stdout.write(f"{label}: {_plural(count, 'value')} re-encrypted")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"

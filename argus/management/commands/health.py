"""``argus health``: check the components like ``/health/`` does; non-zero exit when down."""

import json

from asgiref.sync import async_to_sync
from django.core.management.base import BaseCommand, CommandError

from argus.health import COMPONENTS, check_all


class Command(BaseCommand):
    help = "Report the state of the database, broker, channel layer, worker and beat."

    def add_arguments(self, parser):
        parser.add_argument(
            "components",
            nargs="*",
            metavar="COMPONENT",
            help=f"only these components ({', '.join(COMPONENTS)}); default all",
        )
        parser.add_argument("--json", dest="as_json", action="store_true", help="print JSON")

    def handle(self, *args, components, as_json, **options):
        unknown = sorted(set(components) - set(COMPONENTS))
        if unknown:
            raise CommandError(
                f"unknown component {', '.join(unknown)}; choose from {', '.join(COMPONENTS)}"
            )
        report = async_to_sync(check_all)(components or COMPONENTS)
        if as_json:
            self.stdout.write(json.dumps(report, indent=2))
        else:
            for name, state in report["components"].items():
                if state["status"] == "up":
                    detail = state["detail"]
                else:
                    detail = state["reason"] + (f": {state['error']}" if "error" in state else "")
                self.stdout.write(f"{name:14} {state['status']:5} {detail}")
        if report["status"] != "ok":
            down = [n for n, s in report["components"].items() if s["status"] != "up"]
            raise CommandError(f"down: {', '.join(down)}")

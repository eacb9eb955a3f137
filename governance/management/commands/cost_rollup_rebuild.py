"""Recompute the daily cost rollup from the ledger (after a bulk load or a time zone change)."""

from django.core.management.base import BaseCommand, CommandError

from controlplane.models import Project
from governance.reports import cost_rollup_rebuild


class Command(BaseCommand):
    help = "Recompute the daily cost rollup of every project (or --project SLUG) from the ledger."

    def add_arguments(self, parser):
        parser.add_argument("--project", action="append", default=[], help="Project slug.")

    def handle(self, *args, **options):
        projects = None
        if options["project"]:
            projects = list(Project.objects.filter(slug__in=options["project"]))
            missing = set(options["project"]) - {p.slug for p in projects}
            if missing:
                raise CommandError(f"no such project: {', '.join(sorted(missing))}")
        written = cost_rollup_rebuild(projects=projects)
        self.stdout.write(f"{written} rollup rows written")

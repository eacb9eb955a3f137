"""``manage.py agents_export``: write a project's agent registry as a YAML policy file."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from agents.gitops import document_to_yaml, registry_export
from controlplane.models import Project

HEADER = (
    "# Agent registry of project {project}: manage.py agents_export / agents_apply.\n"
    "# Stored (encrypted) API keys are never exported; see docs/policy-as-code.md.\n"
)


class Command(BaseCommand):
    help = (
        "Write the project's model endpoints, MCP servers, tools and agents (active versions) "
        "as YAML, to standard output or --output. Applying the result with agents_apply "
        "changes nothing."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument("--output", "-o", help="write to this file instead of stdout")

    def handle(self, *args, project: str, output: str | None, **options) -> None:
        project_obj = Project.objects.filter(slug=project).first()
        if project_obj is None:
            raise CommandError(f"No project {project!r}.")
        document = registry_export(project=project_obj)
        text = HEADER.format(project=project_obj.slug) + document_to_yaml(document)
        if not output:
            self.stdout.write(text, ending="")
            return
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"Cannot write {output}: {exc.strerror or exc}") from exc
        counts = ", ".join(
            f"{len(document[section])} {section.replace('_', ' ')}"
            for section in ("model_endpoints", "mcp_servers", "tools", "agents")
        )
        self.stdout.write(self.style.SUCCESS(f"Wrote {output}: {counts}."))

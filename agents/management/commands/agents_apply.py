"""``manage.py agents_apply``: apply a YAML policy file to a project's agent registry."""

from __future__ import annotations

import sys
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from agents.gitops import GitopsError, document_from_yaml, plan_lines, registry_apply
from controlplane.context import ACTOR_SYSTEM, ACTOR_USER, Actor, acting_as, new_request_id
from controlplane.models import Project, Role
from controlplane.permissions import membership_role

SYSTEM_ACTOR = Actor(kind=ACTOR_SYSTEM, name="system:agents_apply")


class Command(BaseCommand):
    help = (
        "Validate a YAML registry file (see agents_export), print the plan as a diff and apply "
        "it in one transaction. Every error is printed with its path and nothing changes. "
        "Objects missing from the file are never deleted."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="YAML file, or - for standard input")
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
        parser.add_argument(
            "--user",
            help="act as this user (an operator or above in the project) instead of the "
            "system actor; recorded in the audit log and as creator of new versions",
        )

    def handle(
        self, *args, file: str, project: str, dry_run: bool, user: str | None, **options
    ) -> None:
        project_obj = Project.objects.filter(slug=project).first()
        if project_obj is None:
            raise CommandError(f"No project {project!r}.")
        user_obj, actor = self._actor(user, project_obj)
        text = self._read(file)
        # One request id for the whole apply: its audit events can be found together.
        request_id = new_request_id()
        try:
            document = document_from_yaml(text)
            with acting_as(actor, request_id=request_id):
                plan = registry_apply(
                    project=project_obj, document=document, dry_run=dry_run, actor=user_obj
                )
        except GitopsError as exc:
            source = "<stdin>" if file == "-" else file
            for path, message in exc.errors:
                self.stderr.write(
                    f"{source}: {path}: {message}" if path else f"{source}: {message}"
                )
            raise CommandError(
                f"{source}: {len(exc.errors)} error(s); nothing was changed."
            ) from exc
        for line in plan_lines(plan):
            self.stdout.write(line)
        if dry_run:
            self.stdout.write("Dry run: nothing was changed.")
        elif plan.has_changes:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Applied to project {project_obj.slug} (audit request id {request_id})."
                )
            )
        else:
            self.stdout.write(f"Project {project_obj.slug} already matches {file}.")

    def _read(self, file: str) -> str:
        if file == "-":
            return sys.stdin.read()
        try:
            return Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise CommandError(f"Cannot read {file}: {reason}") from exc

    def _actor(self, username: str | None, project: Project):
        if not username:
            return None, SYSTEM_ACTOR
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}.")
        role = membership_role(user, project)
        if role is None or not role.includes(Role.OPERATOR):
            raise CommandError(
                f"User {username!r} needs the operator role or above in project {project.slug}."
            )
        return user, Actor(
            kind=ACTOR_USER, name=user.get_username(), user_id=user.pk, ref=str(user.pk)
        )

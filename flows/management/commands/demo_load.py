"""``manage.py demo_load``: the demo login and project (``bootstrap_demo``), then the demo's
agents, tools, policy, budgets, flows, customers and knowledge base. Idempotent."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction

from controlplane.context import ACTOR_SYSTEM, Actor, acting_as
from controlplane.models import Membership, Project, Role
from controlplane.services import membership_create
from flows.demo.load import demo_load

APPROVER_USERNAME = "approver"


class Command(BaseCommand):
    help = (
        "Load the demo project (agents intake/researcher/drafter/reviewer/refunds, demo "
        "tools, policy, budgets, the support-triage and document-review flows). Runs "
        "bootstrap_demo first. A second run changes nothing and says so."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--force", action="store_true", help="run even with DEBUG off")

    def handle(self, *args, force: bool, **options) -> None:
        call_command("bootstrap_demo", force=force, stdout=self.stdout)
        project = Project.objects.get(slug="demo")
        admin = get_user_model().objects.get(username="admin")
        # One transaction: a failure leaves nothing half-loaded (the next run starts over).
        with acting_as(Actor(kind=ACTOR_SYSTEM, name="system:demo_load")), transaction.atomic():
            approver_note = self._second_approver(project)
            report = demo_load(project=project, actor=admin)
        if approver_note:
            report.add(approver_note)
        if not report.changes:
            self.stdout.write("Demo already loaded: nothing changed.")
            return
        for line in report.changes:
            self.stdout.write(f"  {line}")
        self.stdout.write(self.style.SUCCESS(f"Demo loaded: {len(report.changes)} change(s)."))

    def _second_approver(self, project) -> str:
        """A second approver, so a refund above $500 (quorum 2) can be decided; its
        password is kept in VAR_DIR/demo-approver.txt (mode 600)."""
        users = get_user_model()
        user = users.objects.filter(username=APPROVER_USERNAME).first()
        note = ""
        if user is None:
            password = secrets.token_urlsafe(12)
            user = users.objects.create_user(
                username=APPROVER_USERNAME, email="approver@example.com", password=password
            )
            path = Path(settings.VAR_DIR) / "demo-approver.txt"
            path.write_text(f"{APPROVER_USERNAME}\n{password}\n", encoding="utf-8")
            os.chmod(path, 0o600)
            note = f"user {APPROVER_USERNAME} created (password in {path})"
        if not Membership.objects.filter(project=project, user=user).exists():
            membership_create(project=project, user=user, role=Role.APPROVER)
            note = note or f"user {APPROVER_USERNAME} added to the demo project"
        return note

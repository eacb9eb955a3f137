"""``manage.py bootstrap_demo``: create the demo admin user and demo project, print the login."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from controlplane.context import ACTOR_SYSTEM, Actor, acting_as
from controlplane.models import Membership, Project, Role
from controlplane.services import membership_create, project_create

DEMO_USERNAME = "admin"
DEMO_PROJECT = "demo"


def demo_url() -> str:
    """Where to sign in: ``PUBLIC_BASE_URL`` when set, else ``http://127.0.0.1:<WEB_PORT>/``
    (the address ``make run`` serves on), ending in ``/``."""
    if settings.PUBLIC_BASE_URL:
        return settings.PUBLIC_BASE_URL.rstrip("/") + "/"
    return f"http://127.0.0.1:{settings.WEB_PORT}/"


class Command(BaseCommand):
    help = (
        "Create the demo admin user (random password, kept in VAR_DIR/demo-login.txt, mode 600) "
        "and the demo project; print the login. Idempotent. Refuses to run with DEBUG off "
        "unless --force is given."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--force", action="store_true", help="run even with DEBUG off")

    def handle(self, *args, force: bool, **options) -> None:
        if not settings.DEBUG and not force:
            raise CommandError(
                "bootstrap_demo creates a known admin; run it with DEBUG on or --force"
            )
        login_file = Path(settings.VAR_DIR) / "demo-login.txt"
        user_model = get_user_model()
        with (
            acting_as(Actor(kind=ACTOR_SYSTEM, name="system:bootstrap_demo")),
            transaction.atomic(),
        ):
            user = user_model.objects.filter(username=DEMO_USERNAME).first()
            if user is None:
                password = secrets.token_urlsafe(12)
                user = user_model.objects.create_superuser(
                    username=DEMO_USERNAME, email="admin@example.com", password=password
                )
                login_file.write_text(f"{DEMO_USERNAME}\n{password}\n", encoding="utf-8")
                os.chmod(login_file, 0o600)
            project = Project.objects.filter(slug=DEMO_PROJECT).first()
            if project is None:
                project_create(
                    slug=DEMO_PROJECT,
                    name="Demo project",
                    description="Created by make run.",
                    creator=user,
                )
            elif not Membership.objects.filter(project=project, user=user).exists():
                membership_create(project=project, user=user, role=Role.ADMIN)
        if login_file.exists():
            username, password = login_file.read_text(encoding="utf-8").split()[:2]
            self.stdout.write(
                self.style.SUCCESS(
                    f"Demo login: {demo_url()}  user {username}  password {password}"
                )
            )
        else:
            self.stdout.write(
                f"User {DEMO_USERNAME} already existed; its password is unchanged "
                f"(reset with: python manage.py changepassword {DEMO_USERNAME})."
            )

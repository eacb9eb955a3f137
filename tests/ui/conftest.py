"""Fixtures for the UI page tests: members of projects and signed-in Django test clients."""

from __future__ import annotations

import pytest
from django.test import Client

from controlplane.models import Role
from controlplane.services import membership_create, project_create
from tests.factories import PASSWORD as PASSWORD  # re-exported: tests import it from here
from tests.factories import UserFactory


@pytest.fixture
def alice_client(admin_user) -> Client:
    """Alice (admin of ``project``, "acme") signed in."""
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def other_project(db):
    """A project Alice is not a member of, with its own admin (bob)."""
    bob = UserFactory(username="bob")
    return project_create(slug="globex", name="Globex", creator=bob)


@pytest.fixture
def second_project(admin_user):
    """A second project of Alice's."""
    return project_create(slug="initech", name="Initech", creator=admin_user)


@pytest.fixture
def member_of(project):
    """``member_of(role)``: a fresh user with ``role`` in ``project`` and a signed-in client."""

    def make(role: Role, username: str | None = None) -> tuple[Client, object]:
        user = UserFactory(username=username) if username else UserFactory()
        membership_create(project=project, user=user, role=role)
        client = Client()
        client.force_login(user)
        return client, user

    return make

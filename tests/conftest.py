"""Shared fixtures. The suite runs on SQLite by default and on PostgreSQL + Redis when
DATABASE_URL / CELERY_BROKER_URL are set (CI runs both)."""

from __future__ import annotations

import pytest
from django.db import connection
from rest_framework.test import APIClient

from controlplane.models import Role
from controlplane.services import project_create
from tests.factories import UserFactory


def pytest_collection_modifyitems(config, items):
    from django.conf import settings

    on_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    skip_pg = pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL=postgres://...")
    for item in items:
        if "postgres" in item.keywords and not on_postgres:
            item.add_marker(skip_pg)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2's 1M iterations cost ~0.3 s per user; tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _audit_triggers_off_for_flush(request):
    """Let Django's TRUNCATE-based flush after transactional tests pass the audit trigger.

    The trigger rejects TRUNCATE (as it must); tests with ``transaction=True`` end with a
    flush. Only for that flush, triggers are disabled on the test's own connection.
    """
    marker = request.node.get_closest_marker("django_db")
    transactional = bool(
        marker and (marker.kwargs.get("transaction") or (marker.args and marker.args[0]))
    )
    if connection.vendor == "postgresql" and transactional:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = DEFAULT")
    yield
    if connection.vendor == "postgresql" and transactional:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")


@pytest.fixture(autouse=True)
def _no_cached_policies():
    """Per-process policy caches must not carry one test's policy into the next (SQLite
    reuses primary keys after a rollback)."""
    from governance.policies import forget_cached_policies

    forget_cached_policies()
    yield
    forget_cached_policies()


@pytest.fixture
def on_postgres() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture
def admin_user(db):
    return UserFactory(username="alice")


@pytest.fixture
def project(admin_user):
    return project_create(slug="acme", name="Acme", creator=admin_user)


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def admin_client_api(admin_user) -> APIClient:
    client = APIClient()
    client.force_login(admin_user)
    return client


@pytest.fixture
def browser(live_server, monkeypatch):
    """Headless Chromium on the live server (``tests.browser.Browser``); skipped without
    Chromium unless ``REQUIRE_BROWSER=1``. Mark the test ``browser`` and
    ``django_db(transaction=True)``."""
    from tests.browser import open_browser

    with open_browser(live_server.url, monkeypatch, viewport={"width": 1280, "height": 900}) as b:
        yield b


__all__ = ["Role"]

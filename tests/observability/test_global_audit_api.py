"""``/api/v1/audit-events/``: the audit log across the projects the caller administers,
filterable by project; tokens see their own project; members below admin are refused."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from controlplane.models import Membership, Role
from controlplane.services import api_token_create, project_create
from governance.services import audit_record
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/audit-events/"


@pytest.fixture
def projects(admin_user):
    mine = project_create(creator=admin_user, slug="mine", name="Mine")
    also = project_create(creator=admin_user, slug="also", name="Also")
    theirs = project_create(creator=UserFactory(), slug="theirs", name="Theirs")
    for project in (mine, also, theirs):
        audit_record(action="test.global", project=project, data={"p": project.slug})
    return mine, also, theirs


def actions_by_project(response):
    assert response.status_code == 200, response.content
    return sorted(
        e["data"]["p"] for e in response.json()["results"] if e["action"] == "test.global"
    )


def test_an_admin_sees_every_project_they_administer(admin_client_api, projects):
    assert actions_by_project(admin_client_api.get(URL)) == ["also", "mine"]
    assert actions_by_project(admin_client_api.get(URL, {"project": "also"})) == ["also"]
    assert actions_by_project(admin_client_api.get(URL, {"project": "theirs"})) == []


def test_exports_cover_the_same_events(admin_client_api, projects):
    body = b"".join(
        admin_client_api.get(URL + "export/jsonl/", {"action": "test.global"}).streaming_content
    )
    lines = [json.loads(line) for line in body.decode().splitlines()]
    assert sorted(line["data"]["p"] for line in lines) == ["also", "mine"]


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR, Role.APPROVER])
def test_members_below_admin_are_refused(projects, role):
    user = UserFactory()
    Membership.objects.create(user=user, project=projects[0], role=role)
    client = APIClient()
    client.force_login(user)
    assert client.get(URL).status_code == 403
    assert client.get(URL + "export/csv/").status_code == 403


def test_anonymous_is_401(projects):
    assert APIClient().get(URL).status_code == 401


def test_a_token_sees_only_its_project(admin_user, projects):
    _, secret = api_token_create(project=projects[1], user=admin_user, name="t", scopes=["read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert actions_by_project(client.get(URL)) == ["also"]

"""REST: the project's approval settings: members (viewer and up) read them, admins change
them, as on the settings page; validated like the page (400 keyed by field), the webhook
URL write-only and never echoed."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from approvals.models import ApprovalSettings
from approvals.services import approval_settings_update
from controlplane.models import Role
from controlplane.services import api_token_create
from governance.models import AuditEvent
from tests.rbac import check_rbac

from .conftest import member

pytestmark = pytest.mark.django_db


def url(project):
    return f"/api/v1/projects/{project.slug}/approval-settings/"


@pytest.fixture
def admin_api(admin_user):
    client = APIClient()
    client.force_login(admin_user)
    return client


def test_retrieve_gives_the_defaults(project, admin_api):
    response = admin_api.get(url(project))
    assert response.status_code == 200, response.content
    assert response.json() == {
        "default_expiry_minutes": 24 * 60,
        "escalation_sla_minutes": 60,
        "allow_admin_self_approval": False,
        "notify_emails": "",
        "webhook_format": "json",
        "has_webhook": False,
        "updated_at": None,  # never changed yet
    }


def test_patch_changes_audits_and_never_echoes_the_webhook(project, admin_api):
    response = admin_api.patch(
        url(project),
        {
            "default_expiry_minutes": 30,
            "notify_emails": "ops@example.com",
            "webhook_url": "https://hooks.example.com/T1/secret",
            "webhook_format": "slack",
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["default_expiry_minutes"] == 30 and body["has_webhook"] is True
    assert body["webhook_format"] == "slack" and "secret" not in response.content.decode()
    settings = ApprovalSettings.objects.get(project=project)
    assert settings.escalation_sla_minutes == 60  # untouched
    event = AuditEvent.objects.filter(action="approval.settings.updated").latest("sequence")
    assert event.data["changed"]["default_expiry_minutes"] == 30
    assert "secret" not in str(event.data)
    # Omitted keeps the webhook; "" removes it.
    assert admin_api.patch(url(project), {"escalation_sla_minutes": 5}, format="json").json()[
        "has_webhook"
    ]
    assert not admin_api.patch(url(project), {"webhook_url": ""}, format="json").json()[
        "has_webhook"
    ]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"notify_emails": "ops@example.com, nope"}, "notify_emails"),
        ({"webhook_url": "ftp://example.com/x"}, "webhook_url"),
        ({"default_expiry_minutes": -1}, "default_expiry_minutes"),
        ({"escalation_sla_minutes": 60 * 24 * 91}, "escalation_sla_minutes"),
        ({"webhook_format": "xml"}, "webhook_format"),
        ({"allow_admin_self_approval": "maybe"}, "allow_admin_self_approval"),
    ],
)
def test_bad_values_are_400_by_field_and_change_nothing(project, admin_api, data, field):
    before = admin_api.get(url(project)).json()
    response = admin_api.patch(url(project), data, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert admin_api.get(url(project)).json() == before


def test_put_needs_every_field(project, admin_api):
    response = admin_api.put(url(project), {"default_expiry_minutes": 5}, format="json")
    assert response.status_code == 400
    assert "escalation_sla_minutes" in response.json()


def test_reading_needs_the_viewer_role(project):
    check_rbac(method="get", url=url(project), project=project, min_role=Role.VIEWER)


@pytest.mark.parametrize("role", [Role.VIEWER, Role.ADMIN])
def test_members_read_them_but_never_the_webhook_url(project, role):
    approval_settings_update(
        project=project,
        changes={"notify_emails": "ops@example.com"},
        webhook_url="https://hooks.example.com/T1/secret",
    )
    client = APIClient()
    client.force_login(member(project, role))
    response = client.get(url(project))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["notify_emails"] == "ops@example.com" and body["has_webhook"] is True
    assert "webhook_url" not in body and "secret" not in response.content.decode()


def test_a_viewer_cannot_change_them(project):
    client = APIClient()
    client.force_login(member(project, Role.VIEWER))
    denied = client.patch(url(project), {"default_expiry_minutes": 5}, format="json")
    assert denied.status_code == 403
    assert ApprovalSettings.objects.filter(project=project, default_expiry_minutes=5).count() == 0


def test_changing_needs_the_admin_role(project):
    check_rbac(
        method="patch",
        url=url(project),
        data={"default_expiry_minutes": 15},
        project=project,
        min_role=Role.ADMIN,
        audit_action="approval.settings.updated",
    )


def test_a_read_token_cannot_change_them(project, admin_user):
    _, raw = api_token_create(project=project, user=admin_user, name="t", scopes=["read"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get(url(project)).status_code == 200
    denied = client.patch(url(project), {"default_expiry_minutes": 5}, format="json")
    assert denied.status_code == 403

"""REST: list / filter / order / retrieve approvals and decide them with the ``approve``
token scope; the same rules as the UI."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from approvals.models import ApprovalDecision, ApprovalRequest
from approvals.services import approval_decide
from controlplane.models import Role
from controlplane.services import api_token_create
from tests.rbac import check_rbac

from .conftest import member, raise_request

pytestmark = pytest.mark.django_db


def url(project, pk=None, action=""):
    base = f"/api/v1/projects/{project.slug}/approvals/"
    if pk is not None:
        base += f"{pk}/"
    return base + (f"{action}/" if action else "")


def token_client(project, user, scopes):
    _, raw = api_token_create(project=project, user=user, name="t", scopes=scopes)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_list_filter_order_and_retrieve(project, admin_client_api, approver):
    first = raise_request(project)
    second = raise_request(project, agent="billing", run_id="run-2")
    approval_decide(request_id=first, user=approver, verdict="reject", comment="no")

    rows = admin_client_api.get(url(project)).json()["results"]
    assert [r["id"] for r in rows] == [second, first]  # newest first
    pending = admin_client_api.get(url(project), {"status": "pending"}).json()["results"]
    assert [r["id"] for r in pending] == [second]
    assert [
        r["id"] for r in admin_client_api.get(url(project), {"agent": "billing"}).json()["results"]
    ] == [second]
    assert [
        r["id"] for r in admin_client_api.get(url(project), {"run_id": "run-1"}).json()["results"]
    ] == [first]
    ordered = admin_client_api.get(url(project), {"ordering": "requested_at"}).json()["results"]
    assert [r["id"] for r in ordered] == [first, second]

    detail = admin_client_api.get(url(project, first)).json()
    assert detail["status"] == "rejected" and detail["reason"] == "no"
    assert detail["arguments"] == {"amount": 40, "to": "bob"}
    assert detail["decisions"][0]["verdict"] == "reject"
    assert detail["decisions"][0]["approver_name"] == approver.username


def test_bad_filters_are_400_not_500(project, admin_client_api):
    response = admin_client_api.get(url(project), {"requested_after": "yesterday"})
    assert response.status_code == 400 and "requested_after" in response.json()
    response = admin_client_api.get(url(project), {"status": "maybe"})
    assert response.status_code == 400


def test_reading_needs_the_viewer_role(project):
    pk = raise_request(project)
    check_rbac(method="get", url=url(project, pk), project=project, min_role=Role.VIEWER)


def test_deciding_needs_the_approver_role(project):
    # One fresh request per principal, raised beforehand (raising one is audited too).
    pool = [raise_request(project) for _ in range(6)]

    def fresh():
        return url(project, pool.pop(), "decide")

    check_rbac(
        method="post",
        url=fresh,
        data={"verdict": "approve"},
        project=project,
        min_role=Role.APPROVER,
        audit_action="approval.decided",
    )


def test_deciding_needs_the_approve_scope(project, approver):
    pk = raise_request(project)
    denied = token_client(project, approver, ["read", "write"]).post(
        url(project, pk, "decide"), {"verdict": "approve"}, format="json"
    )
    assert denied.status_code == 403 and "approve" in denied.json()["detail"]
    allowed = token_client(project, approver, ["approve"]).post(
        url(project, pk, "decide"), {"verdict": "approve"}, format="json"
    )
    assert allowed.status_code == 200, allowed.content
    assert allowed.json()["status"] == "approved"
    assert ApprovalDecision.objects.get(request_id=pk).via_token is True


def test_edit_errors_are_400_keyed_by_field(project, approver):
    client = token_client(project, approver, ["approve"])
    pk = raise_request(project)
    response = client.post(
        url(project, pk, "decide"),
        {"verdict": "approve", "arguments": {"amount": "lots", "to": "bob"}},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["arguments"] == ["amount: 'lots' is not of type 'integer'"]
    response = client.post(url(project, pk, "decide"), {"verdict": "perhaps"}, format="json")
    assert response.status_code == 400 and "verdict" in response.json()
    response = client.post(
        url(project, pk, "decide"),
        {"verdict": "approve", "arguments": {"amount": 7, "to": "carol"}},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["final_arguments"] == {"amount": 7, "to": "carol"}


def test_same_rules_as_the_ui(project, approver, approver2):
    client = token_client(project, approver, ["approve"])
    own = raise_request(project, requested_by=approver)
    response = client.post(url(project, own, "decide"), {"verdict": "approve"}, format="json")
    assert response.status_code == 403 and "started this run" in response.json()["detail"]

    admin_only = raise_request(project, approver_role="admin")
    response = client.post(
        url(project, admin_only, "decide"), {"verdict": "approve"}, format="json"
    )
    assert response.status_code == 403

    quorum = raise_request(project, quorum=2)
    response = client.post(url(project, quorum, "decide"), {"verdict": "approve"}, format="json")
    assert response.json()["status"] == "pending"
    again = client.post(url(project, quorum, "decide"), {"verdict": "approve"}, format="json")
    assert again.status_code == 400 and "already decided" in str(again.json())
    other = token_client(project, approver2, ["approve"])
    assert (
        other.post(url(project, quorum, "decide"), {"verdict": "approve"}, format="json").json()[
            "status"
        ]
        == "approved"
    )
    late = other.post(url(project, quorum, "decide"), {"verdict": "reject"}, format="json")
    assert late.status_code == 409 and late.json()["current_status"] == "approved"


def test_expired_requests_answer_409(project, approver):
    from approvals.services import approvals_expire

    pk = raise_request(project)
    ApprovalRequest.objects.filter(pk=pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    approvals_expire()
    response = token_client(project, approver, ["approve"]).post(
        url(project, pk, "decide"), {"verdict": "approve"}, format="json"
    )
    assert response.status_code == 409 and response.json()["current_status"] == "expired"


def test_other_projects_requests_are_404(project, admin_client_api):
    from controlplane.services import project_create
    from tests.factories import UserFactory

    other = project_create(slug="globex", name="Globex", creator=UserFactory())
    pk = raise_request(other)
    assert admin_client_api.get(url(project, pk)).status_code == 404
    member(project, Role.APPROVER)

"""The inbox pages: access, tabs and filters, the badge, the detail, deciding with errors
in place, settings."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals.models import ApprovalRequest
from approvals.services import approval_decide, approval_settings_update
from controlplane.models import Role
from governance.models import AuditEvent
from tests.rbac import check_rbac

from .conftest import member, raise_request

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_pages_need_the_viewer_role(project):
    pk = raise_request(project)
    # The inbox list shows the signed-in user's current project; a request of another
    # project is a 404.
    path = reverse("approval-detail", args=[pk])
    check_rbac(method="get", url=path, project=project, min_role=Role.VIEWER, api=False)


def test_deciding_in_the_ui_needs_the_approver_role(project):
    pool = [raise_request(project) for _ in range(6)]
    check_rbac(
        method="post",
        url=lambda: reverse("approval-decide", args=[pool.pop()]),
        data={"action": "approve", "project": project.slug},
        project=project,
        min_role=Role.APPROVER,
        api=False,
        audit_action="approval.decided",
    )


def test_settings_need_the_admin_role_to_change(project):
    check_rbac(
        method="post",
        url=reverse("approvals-settings"),
        data={
            "project": project.slug,
            "default_expiry_minutes": "30",
            "escalation_sla_minutes": "10",
            "notify_emails": "ops@example.com",
            "webhook_format": "slack",
        },
        project=project,
        min_role=Role.ADMIN,
        api=False,
        audit_action="approval.settings.updated",
    )


@pytest.mark.parametrize(
    ("role", "can_edit"),
    [(Role.VIEWER, False), (Role.OPERATOR, False), (Role.APPROVER, False), (Role.ADMIN, True)],
)
def test_every_member_reads_the_settings_page_never_the_webhook_url(project, role, can_edit):
    """The page is the current project's (an outsider sees their own project's), so this
    is not ``check_rbac``: every role reads, only an admin gets the Save button."""
    approval_settings_update(
        project=project,
        changes={"notify_emails": "ops@example.com"},
        webhook_url="https://hooks.example.com/T1/secret",
    )
    response = client_for(member(project, role)).get(reverse("approvals-settings"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "ops@example.com" in html and "set (stored encrypted)" in html
    assert "secret" not in html and "hooks.example.com" not in html
    assert ("only admins change these" not in html) is can_edit
    assert ('<button type="submit">Save</button>' in html) is can_edit


def test_settings_errors_in_place(project, admin_user):
    response = client_for(admin_user).post(
        reverse("approvals-settings"),
        {
            "default_expiry_minutes": "-1",
            "escalation_sla_minutes": "5",
            "notify_emails": "x",
            "webhook_format": "json",
            "webhook_url": "nope",
        },
    )
    assert response.status_code == 400
    form = response.context["form"]
    assert "default_expiry_minutes" in form.errors


def test_tabs_filters_and_badge(project, admin_user, approver):
    a = raise_request(project)
    b = raise_request(project, agent="billing", run_id="run-9")
    ApprovalRequest.objects.filter(pk=b).update(risk="low")
    c = raise_request(project)
    ApprovalRequest.objects.filter(pk=c).update(requested_at=timezone.now() - timedelta(hours=2))
    approval_decide(request_id=a, user=approver, verdict="reject", comment="no thanks")
    client = client_for(admin_user)

    html = client.get(reverse("approvals")).content.decode()
    assert f"approval-{b}" in html and f"approval-{c}" in html and f"approval-{a}" not in html
    assert html.index(f"approval-{c}") < html.index(f"approval-{b}")  # oldest waits on top
    assert re.search(r'id="nav-approvals-badge" class="badge">\s*2', html)

    decided = client.get(reverse("approvals"), {"tab": "decided"}).content.decode()
    assert f"approval-{a}" in decided and "no thanks" in decided

    def ids(**params):
        page = client.get(reverse("approvals"), params, **HTMX).content.decode()
        return sorted(int(x) for x in re.findall(r'id="approval-(\d+)"', page))

    assert ids(agent="billing") == [b]
    assert ids(run="run-9") == [b]
    assert ids(risk="financial") == [c]
    assert ids(age="1h") == [c]
    assert ids(age="forever") == []

    badge = client.get(reverse("approvals-badge")).content.decode()
    assert re.search(r'id="nav-approvals-badge" class="badge">\s*2', badge)
    assert 'hx-trigger="every 15s"' in badge


def test_the_detail_shows_what_is_needed_to_decide(project, admin_user, approver):
    pk = raise_request(project, quorum=2)
    approval_decide(request_id=pk, user=admin_user, verdict="approve", comment="fine by me")
    html = client_for(approver).get(reverse("approval-detail", args=[pk])).content.decode()
    for text in (
        "grant.rule.0",
        "built-in defaults",
        "pay",
        "&quot;amount&quot;: 40",
        "fine by me",
        "Cost of the run so far",
        "1 so far",
        "approve-button",
        "edit-panel",
        "reject-form",
        "approvals.js",
    ):
        assert text in html, text


def test_approve_with_edits_and_errors_in_place(project, approver):
    pk = raise_request(project)
    client = client_for(approver)
    path = reverse("approval-decide", args=[pk])

    bad = client.post(path, {"action": "edit", "arguments": '{"amount": -1, "to": "bob"}'}, **HTMX)
    html = bad.content.decode()
    assert bad.status_code == 200 and "amount: -1 is less than the minimum of 0" in html
    assert 'aria-invalid="true"' in html and "<html" not in html
    broken = client.post(path, {"action": "edit", "arguments": "{oops"}, **HTMX)
    assert "Not valid JSON" in broken.content.decode()
    assert ApprovalRequest.objects.get(pk=pk).status == "pending"

    ok = client.post(
        path, {"action": "edit", "arguments": json.dumps({"amount": 30, "to": "bob"})}, **HTMX
    )
    html = ok.content.decode()
    assert 'id="approval-status">Approved' in html and "final-arguments" in html
    assert 'hx-swap-oob="true"' in html  # the badge and the messages
    assert ApprovalRequest.objects.get(pk=pk).final_arguments == {"amount": 30, "to": "bob"}


def test_reject_with_comment_without_javascript(project, approver):
    pk = raise_request(project)
    response = client_for(approver).post(
        reverse("approval-decide", args=[pk]), {"action": "reject", "comment": "not now"}
    )
    assert response.status_code == 302 and response["Location"] == reverse(
        "approval-detail", args=[pk]
    )
    request = ApprovalRequest.objects.get(pk=pk)
    assert (request.status, request.reason) == ("rejected", "not now")


def test_self_approval_is_refused_in_the_ui(project, approver):
    pk = raise_request(project, requested_by=approver)
    client = client_for(approver)
    html = client.get(reverse("approval-detail", args=[pk])).content.decode()
    assert "you cannot decide" in html and "approve-button" not in html
    response = client.post(reverse("approval-decide", args=[pk]), {"action": "approve"})
    assert response.status_code == 403
    assert AuditEvent.objects.filter(action="approval.decision.refused").exists()


def test_deciding_a_decided_request_says_so(project, approver, approver2):
    pk = raise_request(project)
    approval_decide(request_id=pk, user=approver2, verdict="approve")
    response = client_for(approver).post(
        reverse("approval-decide", args=[pk]), {"action": "reject"}
    )
    assert response.status_code == 409 and b"already approved" in response.content


def test_the_json_editor_check(project, approver):
    pk = raise_request(project)
    client = client_for(approver)
    path = reverse("approval-check-arguments", args=[pk])
    assert (
        "Valid against"
        in client.post(path, {"arguments": '{"amount": 1, "to": "x"}'}).content.decode()
    )
    assert (
        "&#x27;to&#x27; is a required property"
        in client.post(path, {"arguments": '{"amount": 1}'}).content.decode()
    )
    assert "Not valid JSON" in client.post(path, {"arguments": "["}).content.decode()


def test_other_projects_requests_are_404(project, admin_user):
    from controlplane.services import project_create
    from tests.factories import UserFactory

    other = project_create(slug="globex", name="Globex", creator=UserFactory())
    pk = raise_request(other)
    assert client_for(admin_user).get(reverse("approval-detail", args=[pk])).status_code == 404
    member(project, Role.VIEWER)

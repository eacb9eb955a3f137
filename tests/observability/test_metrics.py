"""/metrics: the Prometheus counters move with what is audited (decisions, PII blocks, cost,
approvals) and are readable only with the metrics token or as a staff user."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client
from prometheus_client import REGISTRY

from governance.approval_port import ApprovalOutcome, approval_decided
from governance.pricing import fixed_price
from governance.services import audit_record, cost_record
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_counters_follow_audited_decisions_blocks_cost_and_approvals(
    project, django_capture_on_commit_callbacks
):
    slug = project.slug
    deny = value("controlplane_decisions_total", project=slug, effect="deny", rule="grant.rules")
    blocks = value("controlplane_pii_blocks_total", project=slug, direction="tool_input")
    cost = value("controlplane_cost_usd_total", project=slug, kind="model")
    approved = value("controlplane_approvals_total", project=slug, status="approved")
    with django_capture_on_commit_callbacks(execute=True):
        audit_record(
            action="tool.decision",
            project=project,
            data={"effect": "deny", "rule": "grant.rules.2", "tool": "x"},
        )
        audit_record(action="tool.pii_blocked", project=project, data={"direction": "tool_input"})
        cost_record(call_id="m1", kind="model", project=project, priced=fixed_price(Decimal("0.5")))
    approval_decided.send(
        sender=None,
        outcome=ApprovalOutcome(request_id=1, status="approved"),
        payload={},
        project_id=project.pk,
    )
    assert (
        value("controlplane_decisions_total", project=slug, effect="deny", rule="grant.rules")
        == deny + 1
    )
    assert (
        value("controlplane_pii_blocks_total", project=slug, direction="tool_input") == blocks + 1
    )
    assert value("controlplane_cost_usd_total", project=slug, kind="model") == cost + 0.5
    assert value("controlplane_approvals_total", project=slug, status="approved") == approved + 1


def test_a_rolled_back_event_is_not_counted(project, django_capture_on_commit_callbacks):
    from django.db import transaction

    before = value("controlplane_model_calls_total", project=project.slug, outcome="failed")
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError), transaction.atomic():
            audit_record(action="model.call.failed", project=project, data={})
            raise RuntimeError("rolled back")
        audit_record(action="model.call.failed", project=project, data={})
    assert value("controlplane_model_calls_total", project=project.slug, outcome="failed") == (
        before + 1
    )


def test_metrics_need_the_token_or_a_staff_user(settings, admin_user):
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    anonymous = Client()
    assert anonymous.get("/metrics").status_code == 401
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    ok = anonymous.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-metrics-token")
    assert ok.status_code == 200 and b"controlplane_decisions" in ok.content
    member = Client()
    member.force_login(admin_user)  # a project admin, not staff
    assert member.get("/metrics").status_code == 401
    staff = Client()
    staff.force_login(UserFactory(is_staff=True))
    assert staff.get("/metrics").status_code == 200

"""Two approvers deciding at once (PostgreSQL, real threads): one consistent outcome, one
``approval_decided`` signal, never a double resume."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from approvals.models import ApprovalDecision, ApprovalRequest
from approvals.services import ApprovalNotPending, approval_decide, approvals_expire
from controlplane.models import Role
from governance.approval_port import approval_decided
from tests.concurrency import run_concurrently

from .conftest import member, raise_request

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def signals():
    sent = []
    lock = threading.Lock()

    def receiver(sender, **kwargs):
        with lock:
            sent.append(kwargs["outcome"])

    approval_decided.connect(receiver, dispatch_uid="test-race-signals")
    yield sent
    approval_decided.disconnect(dispatch_uid="test-race-signals")


def attempt(fn):
    try:
        return fn()
    except (ApprovalNotPending, ValidationError) as exc:
        return exc


@pytest.mark.parametrize("round_", range(3))
def test_two_approvers_racing_give_one_outcome(project, signals, round_):
    approvers = [member(project, Role.APPROVER) for _ in range(2)]
    pk = raise_request(project)
    verdicts = ["approve", "reject"]

    results = run_concurrently(
        2,
        lambda i: attempt(
            lambda: approval_decide(request_id=pk, user=approvers[i], verdict=verdicts[i])
        ),
    )

    won = [r for r in results if isinstance(r, ApprovalRequest)]
    lost = [r for r in results if isinstance(r, ApprovalNotPending)]
    assert len(won) == 1 and len(lost) == 1, results
    request = ApprovalRequest.objects.get(pk=pk)
    assert request.status == won[0].status
    assert ApprovalDecision.objects.filter(request=request).count() == 1
    assert [o.status for o in signals] == [request.status]


def test_one_approver_deciding_twice_at_once_counts_once(project, signals):
    approver = member(project, Role.APPROVER)
    pk = raise_request(project, quorum=2)

    results = run_concurrently(
        4,
        lambda i: attempt(lambda: approval_decide(request_id=pk, user=approver, verdict="approve")),
    )

    assert sum(isinstance(r, ApprovalRequest) for r in results) == 1
    assert ApprovalDecision.objects.filter(request_id=pk).count() == 1
    assert ApprovalRequest.objects.get(pk=pk).status == "pending"
    assert signals == []


def test_a_quorum_reached_by_racing_approvers_signals_once(project, signals):
    approvers = [member(project, Role.APPROVER) for _ in range(5)]
    pk = raise_request(project, quorum=3)

    results = run_concurrently(
        5,
        lambda i: attempt(
            lambda: approval_decide(request_id=pk, user=approvers[i], verdict="approve")
        ),
    )

    request = ApprovalRequest.objects.get(pk=pk)
    assert request.status == "approved"
    assert ApprovalDecision.objects.filter(request=request).count() == 3
    assert sum(isinstance(r, ApprovalNotPending) for r in results) == 2
    assert len(signals) == 1


def test_expiry_racing_a_decision_gives_one_outcome(project, signals):
    approver = member(project, Role.APPROVER)
    pk = raise_request(project)
    ApprovalRequest.objects.filter(pk=pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    def go(i):
        if i == 0:
            return approvals_expire()
        return attempt(lambda: approval_decide(request_id=pk, user=approver, verdict="approve"))

    run_concurrently(2, go)

    request = ApprovalRequest.objects.get(pk=pk)
    assert request.status in ("expired", "approved")
    assert [o.status for o in signals] == [request.status]

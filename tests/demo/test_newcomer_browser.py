"""A newcomer's path in headless Chromium over the loaded demo, with a real Celery worker:
``demo_load``, ``demo_ingest --limit 10`` (its $120 refund parks for one approver), then
sign in with the login ``bootstrap_demo`` wrote, open the dashboard, open the parked run,
sign in as the demo's approver, approve the refund from the inbox, watch the run finish
on its live page, open the cost report.

Screenshots (``var/screenshots/demo-*.png``) are the ones in ``docs/images/``; see
``docs/demo.md`` to regenerate them."""

from __future__ import annotations

import io
import re
import uuid

import pytest
from django.core.management import call_command

from agents.models import RefundEntry
from approvals.models import ApprovalRequest
from flows.demo import ingest as demo_ingest
from flows.models import Run, StepRun
from tests.flows.conftest import Worker

from .conftest import load_demo

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]
LIMIT = 10  # tickets 2 and 7 are the $42.50 (allowed) and $120 (one approver) refunds


@pytest.fixture
def demo_worker(tmp_path, settings):
    queue = f"newcomer-{uuid.uuid4().hex[:8]}"
    settings.FLOWS_TASK_QUEUE = queue
    worker = Worker(queue, tmp_path / "worker.log")
    yield worker
    worker.stop()


def login(var_dir, name: str) -> tuple[str, str]:
    """(username, password) from the file ``demo_load`` wrote (``demo-login.txt``,
    ``demo-approver.txt``), as a newcomer reads them."""
    username, password = (var_dir / name).read_text(encoding="utf-8").split()[:2]
    return username, password


def test_a_newcomer_signs_in_opens_a_run_approves_a_refund_and_sees_the_costs(
    demo_var, monkeypatch, demo_worker, browser
):
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    loaded = load_demo()
    admin, admin_password = login(demo_var, "demo-login.txt")
    approver, approver_password = login(demo_var, "demo-approver.txt")
    assert f"user {admin}  password {admin_password}" in loaded  # the printed login
    call_command("demo_ingest", "--limit", str(LIMIT), "--timeout", "600", stdout=io.StringIO())

    triage = Run.objects.filter(flow__slug="support-triage")
    assert triage.count() == LIMIT
    [parked_id] = demo_ingest.parked_run_ids(list(triage.values_list("pk", flat=True)))
    parked = Run.objects.get(pk=parked_id)
    assert "$120.00" in parked.input["message"]
    step = StepRun.objects.get(run=parked, step_id="refunds")
    [request_id] = step.approval_request_ids
    page, base = browser.page, browser.base

    # 1. Sign in with the printed login: the dashboard of the demo project.
    browser.sign_in("/", username=admin, password=admin_password)
    assert page.locator("h1").inner_text() == "Demo project"
    assert "Dashboard" in page.locator("hgroup").inner_text()
    pending = page.locator("section.stats article", has_text="Pending approvals")
    assert pending.locator(".value").inner_text() == "1"
    assert "Spend today vs budgets" in page.locator("body").inner_text()
    browser.screenshot("demo-dashboard", full_page=False)

    # 2. Runs: the batch is listed; open the parked refund run.
    page.locator("aside.sidebar").get_by_role("link", name="Runs", exact=True).click()
    page.wait_for_url(re.compile(rf"{re.escape(base)}/runs/"))
    assert page.locator(f'a[href="/runs/{parked.pk}/"]').count() >= 1
    browser.screenshot("demo-runs", full_page=False)
    page.locator(f'a[href="/runs/{parked.pk}/"]').first.click()
    page.wait_for_url(f"{base}/runs/{parked.pk}/")
    assert page.locator("h1").inner_text().startswith(f"Run {parked.pk}")
    assert "support-triage" in page.locator("h1").inner_text()
    assert page.locator('#steps tr[data-step="refunds"]').get_attribute("data-status") == (
        "waiting_approval"
    )
    assert "waiting" in page.locator("#run-approvals").inner_text()
    browser.screenshot("demo-run-waiting", full_page=False)

    # 3. The approver (admin started the runs) signs in and opens the inbox.
    page.locator('form[action="/logout/"] button').click()
    page.get_by_label("Username").wait_for()
    browser.sign_in("/approvals/", username=approver, password=approver_password)
    row = page.locator(f"#approval-{request_id}")
    assert "issue_refund" in row.inner_text()
    assert page.locator("#nav-approvals-badge").inner_text().startswith("1")
    browser.screenshot("demo-approvals", full_page=False)
    row.locator("a.approval-link").click()
    page.wait_for_url(f"{base}/approvals/{request_id}/")
    assert "issue_refund" in page.locator("h1").inner_text()
    assert "120" in page.locator("#proposed-arguments").inner_text()
    assert page.locator("#approval-status").inner_text() == "Pending"
    browser.screenshot("demo-approval", full_page=False)

    # 4. Approve: the request is approved, the run resumes on the worker and finishes.
    page.locator("#approve-button").click()
    page.locator("#approval-status", has_text="Approved").wait_for()
    page.goto(f"{base}/runs/{parked.pk}/")
    page.locator("#run-status.status-succeeded").wait_for(timeout=120_000)
    assert page.locator('#steps tr[data-step="refunds"]').get_attribute("data-status") == (
        "succeeded"
    )
    assert "approved" in page.locator("#run-approvals").inner_text()
    browser.screenshot("demo-run-finished", full_page=False)
    assert ApprovalRequest.objects.get(pk=request_id).status == "approved"
    assert sorted(str(e.amount_usd) for e in RefundEntry.objects.all()) == ["120.00", "42.50"]

    # 5. The cost report: spend by agent, the refunds agent among them.
    page.goto(f"{base}/costs/report/")
    assert page.locator("h1").inner_text() == "Cost reports"
    report = page.locator("#report-body").inner_text()
    for agent in ("intake", "refunds", "reviewer"):
        assert agent in report
    page.locator("#report-body").evaluate("el => el.scrollIntoView()")
    browser.screenshot("demo-cost-report", full_page=False)
    browser.assert_clean()

"""In headless Chromium, with a real Celery worker: an approver signs in, sees the inbox
badge, opens the request, edits the amount in the JSON editor, approves, and watches the
parked agent turn complete; a screenshot is saved (``var/screenshots/``)."""

from __future__ import annotations

import json
import threading

import pytest
from django.db import connections

from agents.runtime import run_agent_turn
from controlplane.models import Role
from controlplane.services import project_create
from tests.factories import UserFactory

from .conftest import member
from .test_end_to_end import payment_agent
from .webhook_server import webhook_server
from .worker import celery_worker

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def park_in_a_thread(agent, user):
    """Run the turn outside Playwright's event loop (the runtime uses async_to_sync)."""
    result = {}

    def go():
        try:
            result["turn"] = run_agent_turn(
                agent_version=agent.active_version, input="pay bob", user=user
            )
        finally:
            connections.close_all()

    thread = threading.Thread(target=go)
    thread.start()
    thread.join(timeout=120)
    return result["turn"]


def test_an_approver_edits_the_amount_approves_and_sees_the_turn_complete(browser, tmp_path):
    alice = UserFactory(username="alice")
    project = project_create(slug="acme", name="Acme", creator=alice)
    member(project, Role.APPROVER, "bob")
    page, base = browser.page, browser.base
    with webhook_server() as tool_server:
        agent = payment_agent(project, alice, tool_server.url)
        parked = park_in_a_thread(agent, alice)
        assert parked.status == "parked", parked.reason
        [request_id] = parked.approval_request_ids
        with celery_worker(tmp_path / "worker.log"):
            browser.sign_in("/approvals/", username="bob")
            badge = page.locator("#nav-approvals-badge")
            assert badge.is_visible() and badge.inner_text().startswith("1")

            page.locator("body").press("j")  # keyboard: select the first request, open it
            page.locator("body").press("o")
            page.wait_for_url(f"{base}/approvals/{request_id}/")
            assert "payer wants to call pay" in page.locator("h1").inner_text()
            assert '"amount": 500' in page.locator("#proposed-arguments").inner_text()

            page.locator("body").press("e")  # keyboard: open the JSON editor
            editor = page.locator("#id_arguments")
            assert editor.is_visible() and editor.evaluate("el => el === document.activeElement")
            editor.fill(json.dumps({"amount": -3, "to": "bob"}))
            page.get_by_text("-3 is less than the minimum of 0").wait_for()  # live schema check
            editor.fill(json.dumps({"amount": 120, "to": "bob"}, indent=2))
            page.get_by_text("Valid against the tool's schema.").wait_for()
            page.get_by_role("button", name="Approve with these arguments").click()

            page.locator("#approval-status", has_text="Approved").wait_for()
            page.locator("#turn-state", has_text="completed").wait_for(timeout=120_000)
            assert page.locator("#nav-approvals-badge").is_hidden()
            assert '"amount": 120' in page.locator("#final-arguments").inner_text()
            browser.screenshot("approvals-edit-and-approve")
    assert tool_server.received == [{"amount": 120, "to": "bob"}]
    browser.assert_clean()

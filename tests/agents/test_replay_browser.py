"""End to end in headless Chromium: start a policy replay from its page, see the draft's
errors in place, then watch the page turn from the progress to the result on its own."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from agents.models import ReplayJob
from agents.replay import replay_job_run
from controlplane.services import project_create
from tests.factories import UserFactory
from tests.seed import seed_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def recorded(transactional_db):
    # Before the browser starts: the agent runtime cannot run inside Playwright's loop.
    alice = UserFactory(username="alice")
    project = project_create(slug="acme", name="Acme", creator=alice)
    seed_project(project, alice)
    return project


def test_start_a_replay_and_watch_its_result_arrive(recorded, browser):
    page, base = browser.page, browser.base
    browser.sign_in("/replays/", username="alice")

    later = (timezone.now() + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M")
    page.get_by_label("Draft of").select_option("policy")
    page.get_by_label("Target").fill("default")
    page.get_by_label("To (UTC)").fill(later)
    page.get_by_label("Draft", exact=True).fill("caps:\n  max_tool_calls_per_run: -1\n")
    page.get_by_role("button", name="Start replay").click()
    errors = page.locator("#draft-errors")
    assert "caps.max_tool_calls_per_run" in errors.inner_text()
    assert not ReplayJob.objects.exists()

    page.get_by_label("Draft", exact=True).fill("caps:\n  max_tool_calls_per_run: 1\n")
    page.get_by_role("button", name="Start replay").click()
    page.wait_for_url(f"{base}/replays/*/")
    assert "Queued" in page.locator("#replay-status").inner_text()
    job = ReplayJob.objects.get()
    replay_job_run(job_id=job.pk)  # what the worker does
    page.get_by_role("heading", name="What would have changed").wait_for(timeout=10_000)
    assert "newly denied" in page.locator("#replay-status").inner_text()
    browser.screenshot("replay-result")
    browser.assert_clean()

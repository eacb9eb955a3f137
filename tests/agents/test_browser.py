"""End to end in headless Chromium: create an agent with a grant, edit it into version 2, diff
v1 against v2, roll back to v1 through the confirm dialog, screenshot the agent page.

The ``browser`` fixture (``tests/browser.py``): the system Chromium, skipped when missing
unless ``REQUIRE_BROWSER=1``; no request may leave the live server's origin.
"""

from __future__ import annotations

import pytest

from agents.models import Agent
from agents.services import model_endpoint_create, tool_create
from controlplane.services import project_create
from tests.agents.conftest import OBJECT_SCHEMA
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_create_edit_diff_and_roll_back_an_agent(browser):
    alice = UserFactory(username="alice")
    project = project_create(slug="acme", name="Acme", creator=alice)
    model_endpoint_create(project=project, name="scripted", kind="scripted", default_model="s-1")
    for name, risk in (("payments.send", "financial"), ("echo", "read")):
        tool_create(
            project=project,
            name=name,
            kind="builtin",
            builtin_name="echo",
            input_schema=OBJECT_SCHEMA,
            risk=risk,
        )
    page, base = browser.page, browser.base
    browser.sign_in("/agents/", username="alice")

    # Create an agent with one grant and a rule (the form posts with htmx).
    page.get_by_role("button", name="New agent").click()
    page.wait_for_url(f"{base}/agents/new/")
    page.get_by_label("Slug").fill("triage")
    page.get_by_label("Description").fill("Sorts support tickets")
    page.get_by_label("Instructions").fill("You triage support tickets.")
    page.get_by_label("Temperature").fill("0.2")
    page.get_by_label("Grant payments.send").check()
    page.get_by_label("Rules for payments.send").fill("args.amount > 100 => require_approval")
    page.get_by_role("button", name="Create agent").click()
    page.wait_for_url(f"{base}/agents/triage/")
    assert page.locator("#active-badge").inner_text() == "v1 active"
    grants = page.locator("#active-config table")
    assert "args.amount > 100" in grants.inner_text()

    # Edit: a new version 2 with another temperature.
    page.get_by_role("button", name="Edit (new version)").click()
    page.wait_for_url(f"{base}/agents/triage/edit/")
    assert page.get_by_label("Rules for payments.send").input_value() == (
        "args.amount > 100 => require_approval"
    )
    page.get_by_label("Temperature").fill("0.9")
    page.get_by_label("Change note").fill("Warmer replies")
    page.get_by_role("button", name="Save as new version").click()
    page.wait_for_url(f"{base}/agents/triage/")
    assert page.locator("#active-badge").inner_text() == "v2 active"

    # Diff v1 -> v2, loaded into the page by htmx.
    page.get_by_label("From version").select_option("1")
    page.get_by_label("To version").select_option("2")
    page.get_by_role("button", name="Compare").click()
    changed = page.locator('#diff-result tr[data-field="temperature"]')
    changed.wait_for()
    assert "0.2" in changed.inner_text() and "0.9" in changed.inner_text()
    assert page.url == f"{base}/agents/triage/"

    # Roll back to version 1 (confirmed in the dialog); the page body is swapped.
    page.get_by_role("button", name="Roll back to version 1").click()
    page.get_by_text("Rolled back: version 1 is active again.").wait_for()
    assert page.locator("#active-badge").inner_text() == "v1 active"
    assert page.get_by_text("Saved version 2").count() == 0  # stale message cleared
    assert browser.dialogs and browser.dialogs[0].startswith("Activate version 1 of triage?")
    v1 = page.locator("#version-1")
    assert v1.locator(".tag-active").inner_text() == "active"
    assert page.locator("#version-2 .tag-active").count() == 0
    assert Agent.objects.get(slug="triage").active_version.number == 1

    page.get_by_role("button", name="Compare").click()
    page.locator('#diff-result tr[data-field="temperature"]').wait_for()
    browser.screenshot("agent-detail")

    # Live search on the list.
    page.goto(f"{base}/agents/")
    page.get_by_label("Search").press_sequentially("zzz")
    page.get_by_text("No agents match this search.").wait_for()
    assert page.url == f"{base}/agents/"

    browser.assert_clean()

"""End to end in headless Chromium: create an agent with a grant, edit it into version 2, diff
v1 against v2, roll back to v1 through the confirm dialog, screenshot the agent page.

Same conventions as ``tests/ui/test_browser.py``: the system Chromium, skipped when missing
unless ``REQUIRE_BROWSER=1``; no request may leave the live server's origin.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections

from agents.models import Agent
from agents.services import model_endpoint_create, tool_create
from controlplane.services import project_create
from tests.agents.conftest import OBJECT_SCHEMA
from tests.factories import UserFactory
from tests.ui.conftest import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
SCREENSHOT = Path(settings.BASE_DIR) / "var" / "screenshots" / "agent-detail.png"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _unavailable(reason: str) -> None:
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def sync_playwright(monkeypatch):
    if not CHROMIUM.exists():
        _unavailable(f"no Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - a dev dependency
        _unavailable("the playwright package is not installed")
    # Playwright's sync API runs an event loop in this thread; Django refuses ORM calls
    # from a thread with a running loop unless told it is safe (it is: one thread here).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    return sync_playwright


def test_create_edit_diff_and_roll_back_an_agent(live_server, sync_playwright):
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
    base = live_server.url

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            foreign_requests: list[str] = []
            page.on(
                "request",
                lambda req: None if req.url.startswith(base) else foreign_requests.append(req.url),
            )
            js_errors: list[str] = []
            page.on("pageerror", lambda exc: js_errors.append(str(exc)))
            dialogs: list[str] = []

            def accept(dialog) -> None:
                dialogs.append(dialog.message)
                dialog.accept()

            page.on("dialog", accept)

            page.goto(f"{base}/agents/")
            assert "/login/" in page.url
            page.get_by_label("Username").fill("alice")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{base}/agents/")

            # Create an agent with one grant and a rule (the form posts with htmx).
            page.get_by_role("button", name="New agent").click()
            page.wait_for_url(f"{base}/agents/new/")
            page.get_by_label("Slug").fill("triage")
            page.get_by_label("Description").fill("Sorts support tickets")
            page.get_by_label("Instructions").fill("You triage support tickets.")
            page.get_by_label("Temperature").fill("0.2")
            page.get_by_label("Grant payments.send").check()
            page.get_by_label("Rules for payments.send").fill(
                "args.amount > 100 => require_approval"
            )
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
            assert dialogs and dialogs[0].startswith("Activate version 1 of triage?")
            v1 = page.locator("#version-1")
            assert v1.locator(".tag-active").inner_text() == "active"
            assert page.locator("#version-2 .tag-active").count() == 0
            assert Agent.objects.get(slug="triage").active_version.number == 1

            page.get_by_role("button", name="Compare").click()
            page.locator('#diff-result tr[data-field="temperature"]').wait_for()
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            # Live search on the list.
            page.goto(f"{base}/agents/")
            page.get_by_label("Search").press_sequentially("zzz")
            page.get_by_text("No agents match this search.").wait_for()
            assert page.url == f"{base}/agents/"

            assert not js_errors, js_errors
            assert not foreign_requests, foreign_requests
        finally:
            browser.close()
            # ORM calls made while Playwright's loop runs use a connection local to that
            # context (asgiref Local); close it, or it outlives the test database.
            connections.close_all()

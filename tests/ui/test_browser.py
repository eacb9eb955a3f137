"""End to end in headless Chromium: sign in, switch project, create an API token, screenshot.

Uses the system Chromium (never ``playwright install``). Skipped when it is missing,
unless ``REQUIRE_BROWSER=1`` (CI), where a missing browser fails the run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections

from controlplane.models import ApiToken
from controlplane.services import project_create
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
SCREENSHOT = Path(settings.BASE_DIR) / "var" / "screenshots" / "dashboard.png"
TOKEN_RE = re.compile(r"^cpt_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}$")

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


def test_sign_in_switch_project_and_create_a_token(live_server, sync_playwright):
    alice = UserFactory(username="alice")
    project_create(slug="acme", name="Acme", creator=alice)
    project_create(slug="initech", name="Initech", creator=alice)
    base = live_server.url

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            foreign_requests: list[str] = []
            page.on(
                "request",
                lambda req: None if req.url.startswith(base) else foreign_requests.append(req.url),
            )
            js_errors: list[str] = []
            page.on("pageerror", lambda exc: js_errors.append(str(exc)))

            # Sign in through the form; the dashboard of the first project opens.
            page.goto(f"{base}/")
            assert "/login/" in page.url
            page.get_by_label("Username").fill("alice")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{base}/")
            assert page.locator("main h1").inner_text() == "Acme"
            assert page.evaluate("typeof htmx") == "object"
            assert page.get_by_role("navigation", name="Sections").is_visible()

            # Switch project: choosing in the select submits the form.
            with page.expect_navigation():
                page.get_by_label("Current project").select_option("initech")
            assert page.locator("main h1").inner_text() == "Initech"

            # Create an API token with the htmx form; its plaintext is shown once.
            page.get_by_role("link", name="Project settings").click()
            page.wait_for_url(f"{base}/projects/initech/settings/")
            tokens = page.locator("#tokens")
            tokens.get_by_label("Name", exact=True).fill("browser-ci")
            tokens.get_by_label("Write").check()
            tokens.get_by_role("button", name="Create token").click()
            token_code = page.locator("#new-token-value")
            token_code.wait_for()
            plaintext = token_code.inner_text().strip()
            assert TOKEN_RE.match(plaintext), plaintext
            assert "will not be shown again" in page.locator("#tokens").inner_text()
            assert page.url.endswith("/projects/initech/settings/")  # swapped in place
            token = ApiToken.objects.get(name="browser-ci")
            assert token.project.slug == "initech"
            assert token.digest != plaintext
            assert token.scopes == ["read", "write"]
            page.reload()
            assert plaintext not in page.content()
            assert page.locator("#tokens").get_by_role("rowheader", name="browser-ci").is_visible()

            page.goto(f"{base}/")
            assert page.locator("main h1").inner_text() == "Initech"
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            assert not js_errors, js_errors
            assert not foreign_requests, foreign_requests
        finally:
            browser.close()
            # ORM calls made while Playwright's loop runs use a connection local to that
            # context (asgiref Local); close it, or it outlives the test database.
            connections.close_all()

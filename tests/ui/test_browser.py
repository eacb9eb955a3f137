"""End to end in headless Chromium: sign in, switch project, create an API token, screenshot.

The ``browser`` fixture (``tests/browser.py``): the system Chromium, skipped when missing
unless ``REQUIRE_BROWSER=1`` (CI), where a missing browser fails the run.
"""

from __future__ import annotations

import re

import pytest

from controlplane.models import ApiToken
from controlplane.services import project_create
from tests.factories import UserFactory

TOKEN_RE = re.compile(r"^cpt_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}$")

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_sign_in_switch_project_and_create_a_token(browser):
    alice = UserFactory(username="alice")
    project_create(slug="acme", name="Acme", creator=alice)
    project_create(slug="initech", name="Initech", creator=alice)
    page, base = browser.page, browser.base

    # Sign in through the form; the dashboard of the first project opens.
    browser.sign_in("/", username="alice")
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
    browser.screenshot("dashboard")

    browser.assert_clean()

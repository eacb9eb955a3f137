"""Headless Chromium for the end-to-end tests: the system browser, guards, sign-in, screenshots.

Uses the system Chromium (never ``playwright install``). The ``browser`` fixture
(``tests/conftest.py``) skips the test when Chromium or Playwright is missing, unless
``REQUIRE_BROWSER=1`` (CI), where that fails the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connections

from tests.factories import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
SCREENSHOTS = Path(settings.BASE_DIR) / "var" / "screenshots"


def _unavailable(reason: str) -> None:
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@dataclass
class Browser:
    """A page on the live server at ``base`` that records what must not happen: script
    errors and requests leaving the server's origin. Dialogs are accepted and their
    messages kept in ``dialogs``."""

    page: Any
    base: str
    js_errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("request", self._request)
        self.page.on("pageerror", lambda exc: self.js_errors.append(str(exc)))
        self.page.on("dialog", self._dialog)

    def _request(self, request) -> None:
        if not request.url.startswith(self.base):
            self.foreign_requests.append(request.url)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.accept()

    def sign_in(self, path: str, *, username: str, password: str = PASSWORD) -> None:
        """Open ``path``, which must send to the sign-in form, sign in and wait for ``path``."""
        self.page.goto(f"{self.base}{path}")
        assert "/login/" in self.page.url
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(f"{self.base}{path}")

    def screenshot(self, name: str, *, full_page: bool = True) -> Path:
        """A screenshot at ``var/screenshots/<name>.png``: the full page, or only the
        viewport with ``full_page=False`` (smaller, for the docs)."""
        path = SCREENSHOTS / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def assert_clean(self) -> None:
        """No script errors, nothing fetched from another origin."""
        assert not self.js_errors, self.js_errors
        assert not self.foreign_requests, self.foreign_requests


@contextmanager
def open_browser(base: str, monkeypatch, *, viewport: dict[str, int]) -> Iterator[Browser]:
    """Chromium with one page on ``base``; skips (or fails, see the module) without it."""
    if not CHROMIUM.exists():
        _unavailable(f"no Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - a dev dependency
        _unavailable("the playwright package is not installed")
    # Playwright's sync API runs an event loop in this thread; Django refuses ORM calls
    # from a thread with a running loop unless told it is safe (it is: one thread here).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield Browser(page=chromium.new_page(viewport=viewport), base=base)
        finally:
            chromium.close()
            # ORM calls made while Playwright's loop runs use a connection local to that
            # context (asgiref Local); close it, or it outlives the test database.
            connections.close_all()

"""Fixtures for the demo: the demo project loaded by ``demo_load`` (its login files in a
temporary VAR_DIR, never the developer's)."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from controlplane.models import Project


def load_demo() -> str:
    out = io.StringIO()
    call_command("demo_load", stdout=out)
    return out.getvalue()


@pytest.fixture
def demo_var(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.DEBUG = True
    return tmp_path


@pytest.fixture
def demo(demo_var, monkeypatch):
    """The loaded demo project (scripted models: provider keys unset)."""
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    load_demo()
    return Project.objects.get(slug="demo")

"""Fixtures for observability tests: the runtime's scripted endpoint and built-in tools."""

from tests.agents.runtime.conftest import runtime_tools  # noqa: F401

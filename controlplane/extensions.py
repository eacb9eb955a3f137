"""Extension points the upper apps fill in at start-up, so the UI shell never imports them.

Imports point ``controlplane <- governance <- agents <- flows`` (``approvals`` depends on
``governance``), yet the shell shows every section: the inbox badge, dashboard numbers
and panels. Each app registers its contributions in ``AppConfig.ready()``; the shell
reads this registry. Registration is idempotent per key, so a re-run ``ready()`` (tests)
does not duplicate anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# (project, user, role) -> value
DashboardFn = Callable[[Any, Any, Any], Any]


@dataclass(frozen=True, slots=True)
class DashboardStat:
    """One number on the dashboard: ``value(project, user, role) -> int``; ``url_name`` links it."""

    key: str
    label: str
    value: DashboardFn
    url_name: str = ""
    order: int = 100


@dataclass(frozen=True, slots=True)
class DashboardPanel:
    """A dashboard section: ``template`` is rendered with ``panel`` = ``context(project, user, role)``."""

    key: str
    template: str
    context: DashboardFn
    order: int = 100


_nav_badges: dict[str, Callable[[Any], int]] = {}
_stats: dict[str, DashboardStat] = {}
_panels: dict[str, DashboardPanel] = {}


def register_nav_badge(nav_key: str, counter: Callable[[Any], int]) -> None:
    """Show ``counter(project)`` as a badge on the navigation item ``nav_key``."""
    _nav_badges[nav_key] = counter


def nav_badge(nav_key: str, project: Any) -> int | None:
    """The badge count of ``nav_key`` for ``project``; None when nothing is registered."""
    counter = _nav_badges.get(nav_key)
    if counter is None or project is None:
        return None
    return counter(project)


def register_dashboard_stat(stat: DashboardStat) -> None:
    _stats[stat.key] = stat


def register_dashboard_panel(panel: DashboardPanel) -> None:
    _panels[panel.key] = panel


def dashboard_stats() -> list[DashboardStat]:
    return sorted(_stats.values(), key=lambda s: (s.order, s.key))


def dashboard_panels() -> list[DashboardPanel]:
    return sorted(_panels.values(), key=lambda p: (p.order, p.key))

"""Imports point one way: controlplane <- governance <- agents <- flows; approvals -> governance."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("controlplane", "governance", "agents", "flows", "approvals")
# Which project apps each app may import (besides itself).
ALLOWED = {
    "controlplane": set(),
    "governance": {"controlplane"},
    "agents": {"controlplane", "governance"},
    "flows": {"controlplane", "governance", "agents"},
    "approvals": {"controlplane", "governance"},
}


def imported_apps(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        found.update(name.split(".")[0] for name in names)
    return found & set(APPS)


@pytest.mark.parametrize("app", APPS)
def test_app_imports_only_the_apps_below_it(app):
    offenders = []
    for path in sorted((ROOT / app).rglob("*.py")):
        forbidden = imported_apps(path) - ALLOWED[app] - {app}
        if forbidden:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(forbidden)}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("app", APPS)
def test_every_app_has_the_same_shape(app):
    expected = [
        "models.py",
        "services.py",
        "selectors.py",
        "api/serializers.py",
        "api/viewsets.py",
        "api/urls.py",
        "views.py",
        "urls.py",
        "tasks.py",
        "admin.py",
        "filters.py",
    ]
    missing = [name for name in expected if not (ROOT / app / name).exists()]
    assert not missing, f"{app} lacks {missing}"
    assert (ROOT / app / "templates" / app).is_dir(), f"{app} lacks templates/{app}/"

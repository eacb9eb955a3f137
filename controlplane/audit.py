"""The audit port: code below ``governance`` in the import order records audit events through here.

``controlplane`` may not import ``governance`` (imports point
``controlplane <- governance <- agents <- flows``), yet tenancy changes must be audited.
``governance`` registers its ``audit_record`` service here when Django starts; until then
``audit()`` raises, so nothing is ever changed silently without an audit event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import ImproperlyConfigured

_recorder: Callable[..., Any] | None = None


def register_recorder(recorder: Callable[..., Any]) -> None:
    global _recorder
    _recorder = recorder


def audit(**kwargs: Any) -> Any:
    """Record one audit event; keyword arguments are those of ``governance.services.audit_record``.

    Raises ``ImproperlyConfigured`` when no recorder is registered (fail closed).
    """
    if _recorder is None:
        raise ImproperlyConfigured(
            "No audit recorder registered: is 'governance' in INSTALLED_APPS?"
        )
    return _recorder(**kwargs)

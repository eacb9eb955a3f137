"""Typed environment helpers for settings: every value is parsed strictly and a malformed one stops start-up.

Built on django-environ's ``FileAwareEnv``: for any variable ``NAME``, a ``NAME_FILE``
variable pointing at a file wins and the file's contents (trailing newline stripped)
are used, so secrets can come from Docker/Kubernetes secret files.
"""

from __future__ import annotations

from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n", ""}

NOTSET = environ.Env.NOTSET


class StrictEnv(environ.FileAwareEnv):
    """``environ.FileAwareEnv`` that refuses malformed values instead of guessing.

    django-environ reads ``DEBUG=maybe`` as ``False``; here it raises
    ``ImproperlyConfigured`` naming the variable and the accepted spellings.
    Every cast error (``int``, ``float``, URLs) is re-raised as ``ImproperlyConfigured``
    with the variable name, so the process fails at start-up, not on first use.
    """

    def get_value(self, var: str, cast: Any = None, default: Any = NOTSET, parse_default=False):
        try:
            value = super().get_value(var, cast=cast, default=default, parse_default=parse_default)
        except ImproperlyConfigured:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise ImproperlyConfigured(f"Environment variable {var} is malformed: {exc}") from exc
        if isinstance(value, str) and (var + "_FILE") in self.ENVIRON.env:
            value = value.rstrip("\r\n")
        return value

    def bool(self, var: str, default: Any = NOTSET) -> bool:  # noqa: A003 - mirrors environ.Env
        raw = self.get_value(var, cast=str, default=NOTSET if default is NOTSET else str(default))
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ImproperlyConfigured(
            f"Environment variable {var}={raw!r} is not a boolean; "
            f"use one of {sorted(_TRUE)} or {sorted(_FALSE - {''})}"
        )

    def positive_int(self, var: str, default: Any = NOTSET) -> int:
        value = self.int(var, default=default)
        if value <= 0:
            raise ImproperlyConfigured(f"Environment variable {var}={value} must be > 0")
        return value

    def positive_float(self, var: str, default: Any = NOTSET) -> float:
        value = self.float(var, default=default)
        if value <= 0:
            raise ImproperlyConfigured(f"Environment variable {var}={value} must be > 0")
        return value

    def port(self, var: str, default: Any = NOTSET) -> int:
        """A TCP port number, 1 to 65535."""
        value = self.int(var, default=default)
        if not 0 < value < 65536:
            raise ImproperlyConfigured(f"Environment variable {var}={value} must be 1 to 65535")
        return value

    def choice(self, var: str, choices: tuple[str, ...], default: Any = NOTSET) -> str:
        value = self.str(var, default=default).strip().lower()
        if value not in choices:
            raise ImproperlyConfigured(
                f"Environment variable {var}={value!r} must be one of {', '.join(choices)}"
            )
        return value

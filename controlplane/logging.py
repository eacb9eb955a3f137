"""structlog set-up: one JSON (or console) line per event, carrying the request id and actor."""

from __future__ import annotations

from typing import Any

import structlog

_SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def build_logging(*, level: str, fmt: str) -> dict[str, Any]:
    """Configure structlog and return the ``LOGGING`` dict for Django.

    ``level`` is a stdlib level name (``"INFO"``); ``fmt`` is ``"json"`` or ``"console"``.
    Stdlib records (Django, Celery) go through the same processors, so every line has
    ``request_id`` when one is bound (see ``controlplane.middleware``).
    """
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *_SHARED_PROCESSORS,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structlog": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    renderer,
                ],
                "foreign_pre_chain": _SHARED_PROCESSORS,
            },
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structlog"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            # Presidio's DEBUG lines quote the scanned text (matched values, context
            # words): never below INFO, whatever LOG_LEVEL says.
            "presidio-analyzer": {"level": "INFO"},
            "presidio-anonymizer": {"level": "INFO"},
        },
    }

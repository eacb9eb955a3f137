"""API error handling: model validation errors become 400s keyed by field path."""

from __future__ import annotations

import logging

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


def exception_handler(exc, context):
    """DRF's handler, plus: Django ``ValidationError`` -> 400 ``{"field": ["message"]}``.

    Services validate with ``Model.full_clean()`` (one validation path); this keeps their
    errors from surfacing as 500s. A database ``IntegrityError`` (a unique name taken by a
    concurrent request between the check and the insert) -> 409 Conflict: the request
    changed nothing and may be retried.
    """
    if isinstance(exc, IntegrityError):
        logger.warning("integrity error answered with 409: %s", type(exc).__name__)
        return Response(
            {
                "detail": "The change conflicts with a concurrent one (e.g. a name just taken); "
                "nothing was changed. Reload and retry."
            },
            status=status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            exc = exceptions.ValidationError(exc.message_dict)
        else:
            exc = exceptions.ValidationError({"non_field_errors": exc.messages})
    return drf_exception_handler(exc, context)

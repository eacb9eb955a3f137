"""API error handling: model validation errors become 400s keyed by field path."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc, context):
    """DRF's handler, plus: Django ``ValidationError`` -> 400 ``{"field": ["message"]}``.

    Services validate with ``Model.full_clean()`` (one validation path); this keeps their
    errors from surfacing as 500s.
    """
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            exc = exceptions.ValidationError(exc.message_dict)
        else:
            exc = exceptions.ValidationError({"non_field_errors": exc.messages})
    return drf_exception_handler(exc, context)

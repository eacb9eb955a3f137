"""API error handling: model validation errors become 400s keyed by field path; unrouted
URLs and crashes under /api/ answer JSON."""

from __future__ import annotations

import logging

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError
from django.http import JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


def exception_handler(exc, context):
    """DRF's handler, plus: Django ``ValidationError`` -> 400 ``{"field": ["message"]}``.

    Services validate with ``Model.full_clean()`` (one validation path); this keeps their
    errors from surfacing as 500s. A 400 is always an object (a bare list of messages goes
    under ``non_field_errors``), as the schema's ``ValidationErrors`` says. A database
    ``IntegrityError`` (a unique name taken by a concurrent request between the check and
    the insert) -> 409 Conflict: the request changed nothing and may be retried. A
    ``DataError`` (a value out of the database's range that a field let through) -> 400.
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
    if isinstance(exc, DataError):
        # A value the database cannot hold (out of its range): bad input, changed nothing.
        logger.warning("data error answered with 400: %s", exc)
        return Response(
            {"non_field_errors": ["A value is out of the range the database can store."]},
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            exc = exceptions.ValidationError(exc.message_dict)
        else:
            exc = exceptions.ValidationError({"non_field_errors": exc.messages})
    response = drf_exception_handler(exc, context)
    if response is not None and response.status_code == 400 and isinstance(response.data, list):
        # ``ValidationError("message")`` renders a bare list; 400s are keyed by field.
        response.data = {"non_field_errors": response.data}
    return response


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def not_found(request, exception=None):
    """``handler404``: under ``/api/`` a URL no route matches answers like any API 404
    (JSON ``{"detail"}``, as the schema documents), elsewhere Django's page."""
    if _is_api(request):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    """``handler500``: JSON ``{"detail"}`` under ``/api/``, Django's page elsewhere."""
    if _is_api(request):
        return JsonResponse({"detail": "Server error; it was logged."}, status=500)
    return defaults.server_error(request)

"""API error mapping: a database integrity error (a concurrent request took the name) is a
409 that changed nothing, never a 500."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from agents.models import Tool
from controlplane.api.exceptions import exception_handler

pytestmark = pytest.mark.django_db


def test_a_real_integrity_error_becomes_a_409(project):
    Tool.objects.create(project=project, name="dup", kind="builtin", builtin_name="echo")
    try:
        with transaction.atomic():
            # What a concurrent request does between our uniqueness check and our insert.
            Tool.objects.create(project=project, name="dup", kind="builtin", builtin_name="echo")
    except IntegrityError as exc:
        response = exception_handler(exc, {})
    assert response.status_code == 409
    assert "nothing was changed" in response.data["detail"]
    assert Tool.objects.filter(name="dup").count() == 1

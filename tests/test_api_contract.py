"""The API contract: committed OpenAPI schema has not drifted; every viewset filters and orders."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.viewsets import GenericViewSet

SCHEMA = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"


def test_committed_openapi_schema_matches_the_code(tmp_path):
    out = tmp_path / "openapi.yaml"
    call_command("spectacular", "--file", str(out), "--validate", "--fail-on-warn")
    assert SCHEMA.exists(), "docs/openapi.yaml is missing: run `make schema`"
    assert out.read_text() == SCHEMA.read_text(), (
        "docs/openapi.yaml is out of date: run `make schema` and commit it"
    )


def _viewsets(patterns=None, seen=None):
    seen = set() if seen is None else seen
    for entry in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(entry, URLResolver):
            yield from _viewsets(entry.url_patterns, seen)
        elif isinstance(entry, URLPattern):
            cls = getattr(entry.callback, "cls", None)
            if cls and issubclass(cls, GenericViewSet) and cls not in seen:
                seen.add(cls)
                yield cls


def test_there_are_viewsets_to_check():
    assert len(list(_viewsets())) >= 4


@pytest.mark.parametrize("viewset", list(_viewsets()), ids=lambda c: c.__name__)
def test_every_viewset_declares_filters_and_ordering(viewset):
    assert getattr(viewset, "filterset_class", None) or getattr(
        viewset, "filterset_fields", None
    ), f"{viewset.__name__} declares no filterset"
    assert getattr(viewset, "ordering_fields", None), (
        f"{viewset.__name__} declares no ordering_fields"
    )
    assert getattr(viewset, "ordering", None), f"{viewset.__name__} declares no default ordering"


def test_every_list_is_cursor_paginated():
    from rest_framework.mixins import ListModelMixin
    from rest_framework.pagination import CursorPagination

    for viewset in _viewsets():
        if issubclass(viewset, ListModelMixin):
            assert viewset.pagination_class and issubclass(
                viewset.pagination_class, CursorPagination
            ), f"{viewset.__name__} lists without cursor pagination"


# Models with no endpoint of their own, and where their data is reachable instead.
NOT_SERVED_ALONE = {
    "controlplane.User": "members/ and tokens/ show usernames; accounts are managed in admin",
    "controlplane.WorkerHeartbeat": "operational: /readyz reports workers",
    "governance.AuditChainHead": "internal lock row of the audit chain",
    "governance.UsageCounter": "internal counters; agents/{agent}/dry-run/ reports caps",
    "governance.BudgetReservationLine": "the lines of budget-reservations/",
    "agents.ToolGrant": "the grants of an agent version's config",
    # The demo's own tables (flows/demo): written by its built-in tools, read on the
    # "Outbox and refunds" page; not part of the product's API.
    "agents.KnowledgeArticle": "demo data, searched by the kb_search tool",
    "agents.Customer": "demo data, read by the customer_lookup tool",
    "agents.RefundEntry": "demo data, the refund ledger page under Tools",
    "agents.OutboxEmail": "demo data, the outbox page under Tools",
    "governance.CostRollup": "a daily sum of the ledger; cost-entries/report/ serves the sums",
    "flows.FlowWebhook": "flows/{flow}/webhook/ rotates (token shown once) or turns it off",
    "approvals.ApprovalDecision": "the decisions of approvals/{id}/ (in order, with the verdicts)",
}


def _served_models() -> set[str]:
    served = set()
    for viewset in _viewsets():
        queryset = getattr(viewset, "queryset", None)
        if queryset is not None:
            served.add(queryset.model._meta.label)
        serializer = getattr(viewset, "serializer_class", None)
        meta = getattr(serializer, "Meta", None)
        if meta is not None and getattr(meta, "model", None) is not None:
            served.add(meta.model._meta.label)
    return served


@pytest.mark.parametrize(
    "app",
    [
        "controlplane",
        "governance",
        "agents",
        "flows",
        "approvals",
    ],
)
def test_every_model_is_reachable_over_rest(app):
    from django.apps import apps

    served = _served_models()
    missing = [
        model._meta.label
        for model in apps.get_app_config(app).get_models()
        if model._meta.label not in served and model._meta.label not in NOT_SERVED_ALONE
    ]
    assert not missing, f"models with no REST endpoint: {missing}"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/docs/", "/api/docs/redoc/", "/api/v1/docs/"])
def test_api_docs_are_served_from_vendored_assets(client, path):
    response = client.get(path)
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/" in html
    assert "cdn." not in html and "unpkg" not in html and "jsdelivr" not in html
    assert "/api/v1/schema/" in html

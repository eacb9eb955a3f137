"""The one place that decides whether a UI request gets a full page or an htmx partial."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def is_partial_request(request: HttpRequest) -> bool:
    """True for htmx requests that swap a fragment.

    Boosted requests (``hx-boost``) replace the whole ``<body>``, so they get the full
    page like a plain browser request (NetBox ``utilities/htmx.py``).
    """
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.boosted


def render_page(
    request: HttpRequest,
    full_template: str,
    partial_template: str,
    context: dict[str, Any] | None = None,
    *,
    status: int = 200,
) -> HttpResponse:
    """Render ``partial_template`` for an htmx swap, else ``full_template`` (which includes it)."""
    template = partial_template if is_partial_request(request) else full_template
    return render(request, template, context or {}, status=status)

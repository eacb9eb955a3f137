"""The Django project: settings, URLs, the Celery app, tenancy (projects, roles, API tokens) and the UI shell."""

from controlplane.celery import app as celery_app

__all__ = ["celery_app"]

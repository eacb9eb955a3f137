"""Agents: Celery entry points (thin: load by id, call a service)."""

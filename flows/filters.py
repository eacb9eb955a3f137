"""Flows: django-filter filtersets."""

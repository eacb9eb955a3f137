"""Agents: django-filter filtersets."""

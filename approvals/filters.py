"""Approvals: django-filter filtersets."""

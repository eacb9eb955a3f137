"""Flows: admin registrations."""

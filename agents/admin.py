"""Agents: admin registrations."""

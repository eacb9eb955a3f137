"""Flows: reads."""

"""Flows data."""

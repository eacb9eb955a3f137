"""Agents data."""

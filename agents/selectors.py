"""Agents: reads."""

"""Agents: writes (keyword-only, typed, audited)."""

"""Flows: writes (keyword-only, typed, audited)."""

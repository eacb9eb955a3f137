"""Approvals: writes (keyword-only, typed, audited)."""

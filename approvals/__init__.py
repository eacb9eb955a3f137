"""Approvals: approval requests raised by policy, the inbox, decisions, expiry and escalation."""

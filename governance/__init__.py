"""Governance: the policy engine, PII scanning, budgets and cost ledger, and the audit log."""

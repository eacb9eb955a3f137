"""REST API for governance: the audit log (read-only)."""

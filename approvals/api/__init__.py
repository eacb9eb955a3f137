"""REST API for approvals."""

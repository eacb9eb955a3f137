"""UI pages for approvals."""

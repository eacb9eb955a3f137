"""REST API for flows."""

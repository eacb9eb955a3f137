"""REST API for agents."""

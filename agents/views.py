"""UI pages for agents."""

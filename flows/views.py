"""UI pages for flows."""

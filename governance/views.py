"""UI pages for governance."""

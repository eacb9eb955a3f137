"""Viewsets for flows."""

"""Viewsets for agents."""

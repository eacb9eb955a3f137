"""Serializers for agents."""

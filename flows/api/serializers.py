"""Serializers for flows."""

"""Serializers for approvals."""

"""Viewsets for approvals."""

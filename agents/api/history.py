"""REST (read-only) for what the runtime and the version history record: agent turns and
agent activations. Written by ``agents.runtime`` and ``agents.services``; listed here with
filters, ordering and cursor pagination. Reading needs viewer and the ``read`` scope.

A turn's ``messages`` (the conversation as pydantic-ai JSON as the runtime stored it) are
shown on the detail only, since they can be large. Token-shaped strings (API keys, bearer
tokens) in the input, output and conversation are masked as in the audit log.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from agents.filters import AgentActivationFilter, AgentTurnFilter
from agents.models import AgentActivation, AgentTurn
from controlplane.api.base import ProjectHistoryViewSet
from governance.audit_chain import MASK, SECRET_VALUE_RE


def _mask_strings(value: Any) -> Any:
    """``value`` with token-shaped substrings of every string masked (keys kept)."""
    if isinstance(value, dict):
        return {key: _mask_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_strings(item) for item in value]
    return SECRET_VALUE_RE.sub(MASK, value) if isinstance(value, str) else value


class MaskedJSONField(serializers.JSONField):
    def to_representation(self, value):
        return super().to_representation(_mask_strings(value))


class MaskedCharField(serializers.CharField):
    def to_representation(self, value):
        return _mask_strings(super().to_representation(value))


class AgentTurnSerializer(serializers.ModelSerializer):
    agent = serializers.CharField(source="agent_version.agent.slug", read_only=True)
    agent_version = serializers.IntegerField(source="agent_version.number", read_only=True)
    user = serializers.CharField(
        source="user.username", default=None, read_only=True, allow_null=True
    )
    cost_usd = serializers.DecimalField(
        max_digits=20, decimal_places=8, coerce_to_string=True, read_only=True, help_text="USD."
    )
    input = MaskedCharField(read_only=True)
    output = MaskedCharField(read_only=True)
    error = MaskedCharField(read_only=True)

    class Meta:
        model = AgentTurn
        fields = [
            "id",
            "agent",
            "agent_version",
            "run_id",
            "step_id",
            "user",
            "status",
            "input",
            "output",
            "error",
            "model_requests",
            "tool_calls",
            "cost_usd",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class AgentTurnDetailSerializer(AgentTurnSerializer):
    messages = MaskedJSONField(
        read_only=True, help_text="The conversation (pydantic-ai ModelMessagesTypeAdapter JSON)."
    )
    pending = MaskedJSONField(
        read_only=True, help_text="Tool calls waiting for approval (parked turns)."
    )

    class Meta(AgentTurnSerializer.Meta):
        fields = [*AgentTurnSerializer.Meta.fields, "messages", "pending"]
        read_only_fields = fields


class AgentTurnViewSet(ProjectHistoryViewSet):
    """Agent turns of the project (one per ``run_agent_turn``), newest first."""

    queryset = AgentTurn.objects.none()
    serializer_class = AgentTurnSerializer
    filterset_class = AgentTurnFilter
    ordering_fields = ["id", "created_at", "cost_usd"]

    def project_queryset(self):
        return AgentTurn.objects.filter(agent_version__agent__project=self.project).select_related(
            "agent_version__agent", "user"
        )

    def get_serializer_class(self):
        return AgentTurnDetailSerializer if self.action == "retrieve" else AgentTurnSerializer


class AgentActivationSerializer(serializers.ModelSerializer):
    agent = serializers.CharField(source="agent.slug", read_only=True)
    version = serializers.IntegerField(source="version.number", read_only=True)
    activated_by = serializers.CharField(
        source="activated_by.username", default=None, read_only=True, allow_null=True
    )

    class Meta:
        model = AgentActivation
        fields = ["id", "agent", "version", "activated_at", "activated_by"]
        read_only_fields = fields


class AgentActivationViewSet(ProjectHistoryViewSet):
    """When each agent version became active (append-only history, newest first)."""

    queryset = AgentActivation.objects.none()
    serializer_class = AgentActivationSerializer
    filterset_class = AgentActivationFilter
    ordering_fields = ["id", "activated_at"]

    def project_queryset(self):
        return AgentActivation.objects.filter(agent__project=self.project).select_related(
            "agent", "version", "activated_by"
        )

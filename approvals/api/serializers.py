"""Serializers for approvals: requests with their decisions, and the decision input."""

from __future__ import annotations

from rest_framework import serializers

from approvals.models import ApprovalDecision, ApprovalRequest, ApprovalSettings, Verdict


class ApprovalDecisionSerializer(serializers.ModelSerializer):
    approver_role = serializers.CharField(
        read_only=True, help_text="viewer / operator / approver / admin"
    )

    class Meta:
        model = ApprovalDecision
        fields = [
            "approver_name",
            "approver_role",
            "verdict",
            "comment",
            "arguments",
            "self_approval",
            "via_token",
            "decided_at",
        ]
        read_only_fields = fields


class ApprovalRequestSerializer(serializers.ModelSerializer):
    """An approval request. ``arguments`` are shown as displayed in the inbox
    (PII-redacted per the project's audit policy); ``final_arguments`` are the edited
    arguments an approval carried (``null``: the proposed ones)."""

    arguments = serializers.JSONField(source="display_arguments", read_only=True)
    requested_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    decided_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    policy_version_id = serializers.IntegerField(read_only=True, allow_null=True)
    agent_version_id = serializers.IntegerField(read_only=True, allow_null=True)
    decisions = ApprovalDecisionSerializer(many=True, read_only=True)
    # Plain strings: the role enum is already named by the policy schema's components.
    approver_role = serializers.CharField(read_only=True, help_text="The least role that decides.")
    escalated_to_role = serializers.CharField(read_only=True)

    class Meta:
        model = ApprovalRequest
        fields = [
            "id",
            "status",
            "summary",
            "subject_kind",
            "tool",
            "arguments",
            "args_hash",
            "rule",
            "policy_version_id",
            "risk",
            "run_id",
            "step_id",
            "turn_id",
            "tool_call_id",
            "agent",
            "agent_version_id",
            "requested_by",
            "approver_role",
            "quorum",
            "requested_at",
            "expires_at",
            "escalation_at",
            "escalated_at",
            "escalated_to_role",
            "decided_at",
            "decided_by",
            "final_arguments",
            "reason",
            "decisions",
        ]
        read_only_fields = fields


class ApprovalDecideSerializer(serializers.Serializer):
    """``verdict``: approve / reject; ``arguments``: edited arguments (approve only; checked
    against the tool's JSON Schema); ``comment``: returned to the model on a rejection."""

    verdict = serializers.ChoiceField(choices=Verdict.choices)
    comment = serializers.CharField(required=False, allow_blank=True, max_length=4000, default="")
    arguments = serializers.DictField(required=False, allow_null=True, default=None)


class ApprovalSettingsSerializer(serializers.ModelSerializer):
    """A project's approval settings. ``webhook_url`` is write-only (stored encrypted, never
    returned): omit it or send ``null`` to keep the current URL, ``""`` to remove it;
    ``has_webhook`` says whether one is set. Durations in minutes (0: never)."""

    webhook_url = serializers.CharField(
        write_only=True,
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=2000,
        help_text='An http(s) URL; "" removes the webhook, omitted or null keeps it.',
    )
    has_webhook = serializers.BooleanField(read_only=True)
    updated_at = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="null until an admin first changes them."
    )

    class Meta:
        model = ApprovalSettings
        fields = [
            "default_expiry_minutes",
            "escalation_sla_minutes",
            "allow_admin_self_approval",
            "notify_emails",
            "webhook_format",
            "webhook_url",
            "has_webhook",
            "updated_at",
        ]
        read_only_fields = ["has_webhook", "updated_at"]
        # PUT replaces the settings: every setting is required (PATCH: any).
        extra_kwargs = {
            name: {"required": True}
            for name in (
                "default_expiry_minutes",
                "escalation_sla_minutes",
                "allow_admin_self_approval",
                "notify_emails",
                "webhook_format",
            )
        }

"""Forms of the approval inbox: the decision (approve, edit & approve, reject) and the
project's approval settings. Rules live in ``approvals.services``; these parse input."""

from __future__ import annotations

import json

from django import forms

from approvals.models import ApprovalSettings, WebhookFormat


class DecisionForm(forms.Form):
    """``action``: approve / edit / reject. ``arguments``: the JSON editor's text (edit);
    ``comment``: optional, returned to the model with a rejection."""

    action = forms.ChoiceField(
        choices=[("approve", "Approve"), ("edit", "Edit & approve"), ("reject", "Reject")]
    )
    arguments = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false", "class": "code"}),
    )
    comment = forms.CharField(
        required=False, max_length=4000, widget=forms.Textarea(attrs={"rows": 2})
    )

    def clean(self):
        data = super().clean()
        if data.get("action") == "edit":
            text = data.get("arguments") or ""
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as exc:
                self.add_error(
                    "arguments",
                    f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).",
                )
                return data
            if not isinstance(parsed, dict):
                self.add_error("arguments", "Give the arguments as a JSON object.")
                return data
            data["parsed_arguments"] = parsed
        return data


class ApprovalSettingsForm(forms.ModelForm):
    webhook_url = forms.CharField(
        required=False,
        max_length=2000,
        help_text="Stored encrypted. Leave empty to keep the current one.",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
    )
    remove_webhook = forms.BooleanField(required=False)
    webhook_format = forms.ChoiceField(choices=WebhookFormat.choices)

    class Meta:
        model = ApprovalSettings
        fields = [
            "default_expiry_minutes",
            "escalation_sla_minutes",
            "allow_admin_self_approval",
            "notify_emails",
            "webhook_format",
        ]
        widgets = {"notify_emails": forms.Textarea(attrs={"rows": 2})}
        help_texts = {
            "default_expiry_minutes": "A new request expires (rejected, reason expired) after this long; 0: never.",
            "escalation_sla_minutes": "Still pending after this long: the next role up is notified; 0: never.",
            "allow_admin_self_approval": "Admins may decide requests of runs they started (audited).",
            "notify_emails": "Comma-separated; emailed on new request, escalation and decision.",
        }

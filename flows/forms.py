"""Forms of the flows pages: parse input only; the rules live in the services."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from flows.models import RunStatus, ScheduleKind, SourceFormat, TriggerKind

SOURCE_ATTRS = {"rows": 18, "spellcheck": "false", "class": "code", "autocomplete": "off"}


class JSONObjectField(forms.CharField):
    """A textarea holding a JSON object; an empty box is ``{}``."""

    widget = forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "class": "code"})

    def clean(self, value: Any) -> dict[str, Any]:
        text = super().clean(value) or ""
        if not text.strip():
            return {}
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                f"Not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
            ) from exc
        if not isinstance(data, dict):
            raise forms.ValidationError('Give a JSON object, e.g. {"topic": "owls"}.')
        return data


class DefinitionForm(forms.Form):
    source = forms.CharField(
        label="Definition", strip=False, widget=forms.Textarea(attrs=SOURCE_ATTRS)
    )
    source_format = forms.ChoiceField(
        label="Format", choices=SourceFormat.choices, initial=SourceFormat.YAML
    )


class FlowCreateForm(DefinitionForm):
    slug = forms.CharField(
        max_length=50,
        help_text="Permanent. Lowercase letters, digits and inner hyphens.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    name = forms.CharField(max_length=200, required=False)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    field_order = ["slug", "name", "description", "source_format", "source"]


class FlowVersionForm(DefinitionForm):
    change_note = forms.CharField(max_length=500, required=False)
    activate = forms.BooleanField(required=False, initial=True, label="Make it the active version")


class RunStartForm(forms.Form):
    input = JSONObjectField(
        label="Run input (JSON object)",
        required=False,
        help_text="Templates see it as input.<key>.",
    )


class RunFilterForm(forms.Form):
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *RunStatus.choices])
    flow = forms.ChoiceField(required=False, choices=[("", "Any flow")])
    trigger = forms.ChoiceField(required=False, choices=[("", "Any trigger"), *TriggerKind.choices])
    started_by = forms.CharField(required=False, max_length=150, label="Started by")
    since = forms.DateTimeField(
        required=False, label="From", widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )
    until = forms.DateTimeField(
        required=False, label="Until", widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )

    def __init__(self, *args, flows: list[str] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["flow"].choices = [("", "Any flow"), *((slug, slug) for slug in flows)]


class ScheduleForm(forms.Form):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(choices=ScheduleKind.choices, initial=ScheduleKind.CRON)
    cron = forms.CharField(
        required=False,
        max_length=100,
        help_text="Cron: minute hour day-of-month month day-of-week (UTC), e.g. 0 6 * * 1-5.",
    )
    interval_seconds = forms.IntegerField(
        required=False, min_value=10, label="Every (seconds)", help_text="For kind interval."
    )
    input = JSONObjectField(label="Run input (JSON object)", required=False)

"""UI forms for projects, members and API tokens: they check shape; services hold the rules."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.utils import timezone

from controlplane.models import Project, Role, TokenScope, time_zone_names

MAX_TOKEN_TTL_DAYS = 3650


def add_service_errors(
    form: forms.Form, error: ValidationError, *, rename: dict[str, str] | None = None
) -> None:
    """Show a service's ``ValidationError`` on ``form`` in place.

    Errors keyed by a field of the form (after ``rename``, service name -> form name) go
    on that field; the rest become non-field errors.
    """
    if not hasattr(error, "error_dict"):
        form.add_error(None, error.messages)
        return
    for key, messages in error.message_dict.items():
        field = (rename or {}).get(key, key)
        form.add_error(field if field in form.fields else None, messages)


class ProjectCreateForm(forms.Form):
    slug = forms.CharField(
        max_length=50,
        help_text="Permanent. 1-50 lowercase letters, digits and inner hyphens.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


class PrefixedIdsForm(forms.Form):
    """A form whose element ids start with ``id_<id_prefix>_``.

    Several forms share the project settings page; their ids (and the labels,
    ``aria-describedby`` and error ids built from them) must not collide.
    """

    id_prefix = ""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("auto_id", f"id_{self.id_prefix}_%s")
        super().__init__(*args, **kwargs)


def _time_zone_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in sorted(time_zone_names())]


class ProjectUpdateForm(PrefixedIdsForm):
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    time_zone = forms.ChoiceField(
        choices=_time_zone_choices,
        help_text="Budget days and months start at midnight in this time zone.",
    )

    id_prefix = "details"

    @classmethod
    def for_project(cls, project: Project) -> ProjectUpdateForm:
        return cls(
            initial={
                "name": project.name,
                "description": project.description,
                "time_zone": project.time_zone,
            }
        )


class MemberAddForm(PrefixedIdsForm):
    username = forms.CharField(
        max_length=150, widget=forms.TextInput(attrs={"autocomplete": "off"})
    )
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)

    id_prefix = "member_add"

    def clean_username(self):
        username = self.cleaned_data["username"].strip()
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise ValidationError("No active user with this username.")
        self.cleaned_data["user"] = user
        return username


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class ApiTokenCreateForm(PrefixedIdsForm):
    name = forms.CharField(max_length=100, widget=forms.TextInput(attrs={"autocomplete": "off"}))
    scopes = forms.MultipleChoiceField(
        choices=TokenScope.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=[TokenScope.READ],
        help_text="'approve' needs the approver role.",
    )
    expires_in_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_TOKEN_TTL_DAYS,
        label="Expires in (days)",
        help_text="Leave empty for the default lifetime.",
    )

    id_prefix = "token"

    def expires_at(self) -> datetime | str:
        """The ``expires_at`` argument for ``api_token_create`` ("default" when left empty)."""
        days = self.cleaned_data.get("expires_in_days")
        if days is None:
            return "default"
        return timezone.now() + timedelta(days=days)

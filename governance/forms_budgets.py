"""UI forms for budgets and the cost ledger filters: they parse and shape input; the rules live in
``Budget.clean()`` and the budget services."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from controlplane.models import Project, slug_validator
from governance.models import (
    MAX_ALERT_THRESHOLD_PERCENT,
    MAX_ALERT_THRESHOLDS,
    USD_DIGITS,
    BudgetPeriodKind,
    BudgetScope,
    CostEntry,
    CostKind,
)


def _member_choices(project: Project) -> list[tuple[str, str]]:
    usernames = (
        get_user_model()
        .objects.filter(memberships__project=project)
        .order_by("username")
        .values_list("username", flat=True)
    )
    return [("", "—"), *((name, name) for name in usernames)]


class BudgetForm(forms.Form):
    """Create (all fields) or edit (``editing=True``: scope, period and user are shown but
    fixed, ``active`` can be switched) a budget."""

    name = forms.CharField(
        max_length=50,
        validators=[slug_validator],
        help_text="Unique in the project; lowercase letters, digits and inner hyphens.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    description = forms.CharField(max_length=500, required=False)
    scope = forms.ChoiceField(
        choices=BudgetScope.choices,
        help_text="Project: every call. User: calls made for one member. Agent: calls of the "
        "agent versions that reference this budget.",
    )
    user = forms.ChoiceField(required=False, help_text="Only for user budgets.")
    period = forms.ChoiceField(
        choices=BudgetPeriodKind.choices,
        help_text="Days and months start at midnight in the project's time zone.",
    )
    limit_usd = forms.DecimalField(
        label="Limit (USD)",
        max_digits=USD_DIGITS["max_digits"],
        decimal_places=USD_DIGITS["decimal_places"],
        widget=forms.NumberInput(attrs={"step": "0.01", "min": "0.01"}),
    )
    hard = forms.BooleanField(
        required=False,
        initial=True,
        label="Hard limit",
        help_text="Hard: a call that could go over is refused before it is made. "
        "Soft: it is allowed and the thresholds alert.",
    )
    alert_thresholds = forms.CharField(
        required=False,
        initial="50, 80, 100",
        label="Alert at (% of the limit)",
        help_text=f"Up to {MAX_ALERT_THRESHOLDS} whole percentages from 1 to "
        f"{MAX_ALERT_THRESHOLD_PERCENT}, comma-separated; each alerts once per period.",
    )
    active = forms.BooleanField(required=False, initial=True, label="Active")

    FIXED = ("scope", "period", "user")

    def __init__(self, *args: Any, project: Project, editing: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.project = project
        self.editing = editing
        self.fields["user"].choices = _member_choices(project)
        if editing:
            for name in self.FIXED:
                self.fields[name].disabled = True
                self.fields[name].help_text = "Fixed once created."
        else:
            del self.fields["active"]

    def clean_alert_thresholds(self) -> list[int]:
        raw = self.cleaned_data.get("alert_thresholds", "")
        values = []
        for part in (p.strip() for p in raw.replace(";", ",").split(",")):
            if not part:
                continue
            if not part.isdigit():
                raise ValidationError(f"{part!r} is not a whole percentage.")
            values.append(int(part))
        return values

    def clean_user(self):
        username = self.cleaned_data.get("user")
        if not username:
            return None
        return get_user_model().objects.filter(username=username).first()

    def service_fields(self) -> dict[str, Any]:
        """Keyword arguments for ``budget_create`` / ``budget_update``."""
        data = dict(self.cleaned_data)
        if self.editing:
            for name in self.FIXED:
                data.pop(name, None)
        return data

    @classmethod
    def for_budget(cls, budget, **kwargs: Any) -> BudgetForm:
        initial = {
            "name": budget.name,
            "description": budget.description,
            "scope": budget.scope,
            "user": budget.user.get_username() if budget.user_id else "",
            "period": budget.period,
            "limit_usd": budget.limit_usd.normalize(),
            "hard": budget.hard,
            "alert_thresholds": ", ".join(str(t) for t in budget.alert_thresholds or []),
            "active": budget.active,
        }
        return cls(initial=initial, project=budget.project, editing=True, **kwargs)


class CostFilterForm(forms.Form):
    """GET filters of the cost page. Dates are days in the project's time zone, ``to``
    included; ``before`` pages by entry id (keyset, newest first)."""

    agent = forms.ChoiceField(required=False)
    model = forms.ChoiceField(required=False)
    user = forms.ChoiceField(required=False)
    kind = forms.ChoiceField(required=False, choices=[("", "—"), *CostKind.choices])
    date_from = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        required=False, label="To (included)", widget=forms.DateInput(attrs={"type": "date"})
    )
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    FILTERS = ("agent", "model", "user", "kind", "date_from", "date_to")

    def __init__(self, *args: Any, project: Project, entries: QuerySet[CostEntry], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.project = project
        values = entries.order_by()

        def choices(field: str) -> list[tuple[str, str]]:
            found = values.exclude(**{f"{field}__isnull": True}).exclude(**{field: ""})
            names = sorted(set(found.values_list(field, flat=True).distinct()))
            return [("", "—"), *((name, name) for name in names)]

        self.fields["agent"].choices = choices("agent__slug")
        self.fields["model"].choices = choices("model")
        self.fields["user"].choices = choices("user__username")

    def clean(self):
        data = super().clean()
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and end < start:
            self.add_error("date_to", "The end date is before the start date.")
        return data

    @property
    def filtered(self) -> bool:
        return self.is_bound and any(self.data.get(name) for name in self.FILTERS)

    def filter(self, entries: QuerySet[CostEntry]) -> QuerySet[CostEntry]:
        """Apply the filters (call only when the form is valid)."""
        data = self.cleaned_data
        zone = self.project.zone
        if data.get("agent"):
            entries = entries.filter(agent__slug=data["agent"])
        if data.get("model"):
            entries = entries.filter(model=data["model"])
        if data.get("user"):
            entries = entries.filter(user__username=data["user"])
        if data.get("kind"):
            entries = entries.filter(kind=data["kind"])
        if data.get("date_from"):
            entries = entries.filter(occurred_at__gte=_midnight(data["date_from"], zone))
        if data.get("date_to"):
            end = _midnight(data["date_to"] + timedelta(days=1), zone)
            entries = entries.filter(occurred_at__lt=end)
        return entries


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time.min, tzinfo=zone)

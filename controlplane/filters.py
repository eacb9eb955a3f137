"""django-filter filtersets for tenancy resources."""

from __future__ import annotations

from datetime import UTC

import django_filters
from django.core.exceptions import ValidationError
from django_filters.fields import IsoDateTimeField as _IsoDateTimeField

from controlplane.models import ApiToken, Membership, Project


class UtcIsoDateTimeField(_IsoDateTimeField):
    """An ISO 8601 date-time, given in UTC to the database: PostgreSQL refuses offsets
    beyond +-15:59 that Python accepts (a 500 otherwise), and a year out of range is a
    field error, not a crash."""

    def to_python(self, value):
        value = super().to_python(value)
        if value is None:
            return None
        try:
            return value.astimezone(UTC)
        except (OverflowError, ValueError) as exc:
            raise ValidationError("The date-time is out of range.", code="invalid") from exc


class IsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """``django_filters.IsoDateTimeFilter`` with ``UtcIsoDateTimeField``: use it for every
    date-time filter of the API."""

    field_class = UtcIsoDateTimeField


class ProjectFilter(django_filters.FilterSet):
    class Meta:
        model = Project
        fields = {"slug": ["exact"], "name": ["exact", "icontains"]}


class MembershipFilter(django_filters.FilterSet):
    username = django_filters.CharFilter(field_name="user__username")

    class Meta:
        model = Membership
        fields = ["role"]


class ApiTokenFilter(django_filters.FilterSet):
    active = django_filters.BooleanFilter(method="filter_active")

    class Meta:
        model = ApiToken
        fields = ["name", "prefix"]

    def filter_active(self, queryset, name, value):
        from django.db.models import Q
        from django.utils import timezone

        now = timezone.now()
        active = Q(revoked_at__isnull=True) & (Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        return queryset.filter(active) if value else queryset.exclude(active)

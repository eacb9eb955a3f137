"""django-filter filtersets for tenancy resources."""

from __future__ import annotations

import django_filters

from controlplane.models import ApiToken, Membership, Project


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

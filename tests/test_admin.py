"""Django admin: every model of ours is registered; the audit log is read-only there."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.contrib import admin

from governance.services import audit_record

OUR_APPS = ("controlplane", "governance", "agents", "flows", "approvals")


def test_every_model_is_registered_in_the_admin():
    missing = [
        model._meta.label
        for app in OUR_APPS
        for model in apps.get_app_config(app).get_models()
        if model not in admin.site._registry
    ]
    assert not missing, f"not in the admin: {missing}"


@pytest.mark.django_db
def test_audit_events_are_read_only_in_the_admin(client, django_user_model):
    staff = django_user_model.objects.create_superuser("root", "root@example.com", "pw-123456")
    client.force_login(staff)
    admin_client = client
    event = audit_record(action="test.event")
    page = admin_client.get(f"/admin/governance/auditevent/{event.pk}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert admin_client.get(f"/admin/governance/auditevent/{event.pk}/delete/").status_code == 403
    assert admin_client.get("/admin/governance/auditevent/add/").status_code == 403

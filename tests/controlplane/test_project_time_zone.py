"""A project's time zone (IANA name): validated, shown and edited in the API and on the settings page."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from controlplane.services import project_create, project_update
from governance.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_new_projects_default_to_utc(project):
    assert project.time_zone == "UTC"
    assert str(project.zone) == "UTC"


def test_an_unknown_time_zone_is_refused_by_the_service(project, admin_user):
    with pytest.raises(ValidationError) as error:
        project_update(project=project, time_zone="Mars/Olympus_Mons")
    assert "time_zone" in error.value.message_dict
    with pytest.raises(ValidationError):
        project_create(slug="b", name="B", time_zone="not a zone", creator=admin_user)


def test_the_api_shows_and_changes_the_time_zone(admin_client_api, project):
    url = f"/api/v1/projects/{project.slug}/"
    assert admin_client_api.get(url).json()["time_zone"] == "UTC"
    response = admin_client_api.patch(url, {"time_zone": "Europe/Berlin"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["time_zone"] == "Europe/Berlin"
    project.refresh_from_db()
    assert project.time_zone == "Europe/Berlin"
    event = AuditEvent.objects.filter(action="project.updated").last()
    assert event.data["after"] == {"time_zone": "Europe/Berlin"}


def test_the_api_answers_400_with_the_field_for_a_bad_time_zone(admin_client_api, project):
    url = f"/api/v1/projects/{project.slug}/"
    response = admin_client_api.patch(url, {"time_zone": "Europe/Atlantis"}, format="json")
    assert response.status_code == 400
    assert "time_zone" in response.json()
    project.refresh_from_db()
    assert project.time_zone == "UTC"


def test_a_project_can_be_created_in_a_time_zone(admin_client_api):
    response = admin_client_api.post(
        "/api/v1/projects/",
        {"slug": "tokyo", "name": "Tokyo", "time_zone": "Asia/Tokyo"},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["time_zone"] == "Asia/Tokyo"


def test_the_settings_page_edits_the_time_zone_with_errors_in_place(admin_user, project):
    client = Client()
    client.force_login(admin_user)
    url = reverse("project-settings", args=[project.slug])
    html = client.get(url).content.decode()
    assert 'name="time_zone"' in html and "Europe/Berlin" in html
    bad = client.post(url, {"name": "Acme", "description": "", "time_zone": "Nowhere/City"})
    assert bad.status_code == 200
    assert 'id="id_details_time_zone_error"' in bad.content.decode()
    ok = client.post(url, {"name": "Acme", "description": "", "time_zone": "America/New_York"})
    assert ok.status_code == 302
    project.refresh_from_db()
    assert project.time_zone == "America/New_York"

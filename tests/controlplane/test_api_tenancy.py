"""REST API for projects, members and tokens: RBAC, validation errors, audit events."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane.models import ApiToken, Membership, Project, Role
from controlplane.services import api_token_create, api_token_revoke, membership_create
from governance.models import AuditEvent
from tests.factories import MembershipFactory, ProjectFactory, UserFactory
from tests.rbac import check_rbac

pytestmark = pytest.mark.django_db


def bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


# --- RBAC matrix, via the reusable helper ------------------------------------------------


def test_project_detail_rbac(project):
    check_rbac(
        method="get", url=f"/api/v1/projects/{project.slug}/", project=project, min_role=Role.VIEWER
    )


def test_project_update_rbac(project):
    check_rbac(
        method="patch",
        url=f"/api/v1/projects/{project.slug}/",
        data={"name": "Renamed"},
        project=project,
        min_role=Role.ADMIN,
        audit_action="project.updated",
    )


def test_member_list_rbac(project):
    check_rbac(
        method="get",
        url=f"/api/v1/projects/{project.slug}/members/",
        project=project,
        min_role=Role.VIEWER,
    )


def test_member_add_rbac(project):
    check_rbac(
        method="post",
        url=f"/api/v1/projects/{project.slug}/members/",
        data=lambda: {"username": UserFactory().username, "role": "viewer"},
        project=project,
        min_role=Role.ADMIN,
        audit_action="membership.created",
    )


def test_member_role_change_rbac(project):
    def url():
        user = UserFactory()
        Membership.objects.create(user=user, project=project, role=Role.VIEWER)
        return f"/api/v1/projects/{project.slug}/members/{user.username}/"

    check_rbac(
        method="patch",
        url=url,
        data={"role": "operator"},
        project=project,
        min_role=Role.ADMIN,
        audit_action="membership.updated",
    )


def test_token_create_rbac(project):
    check_rbac(
        method="post",
        url=f"/api/v1/projects/{project.slug}/tokens/",
        data={"name": "ci", "scopes": ["read"]},
        project=project,
        min_role=Role.VIEWER,
        audit_action="api_token.created",
    )


def test_audit_event_list_rbac(project):
    check_rbac(
        method="get",
        url=f"/api/v1/projects/{project.slug}/audit-events/",
        project=project,
        min_role=Role.VIEWER,
    )


# --- Projects -----------------------------------------------------------------------------


def test_it_lists_only_my_projects(admin_client_api, project):
    ProjectFactory(slug="someone-elses")
    response = admin_client_api.get("/api/v1/projects/")
    assert response.status_code == 200
    assert [p["slug"] for p in response.json()["results"]] == ["acme"]
    assert response.json()["results"][0]["role"] == "admin"


def test_creating_a_project_makes_the_creator_admin_and_is_audited(admin_client_api, admin_user):
    response = admin_client_api.post(
        "/api/v1/projects/", {"slug": "new-one", "name": "New"}, format="json"
    )
    assert response.status_code == 201, response.content
    project = Project.objects.get(slug="new-one")
    assert Membership.objects.get(project=project, user=admin_user).role == Role.ADMIN
    event = AuditEvent.objects.filter(action="project.created").get()
    assert event.actor_name == admin_user.username and event.project == project
    assert event.actor_kind == "user"


def test_bad_project_slug_gets_400_with_field_path(admin_client_api):
    response = admin_client_api.post(
        "/api/v1/projects/", {"slug": "Bad Slug!", "name": ""}, format="json"
    )
    assert response.status_code == 400
    body = response.json()
    assert "slug" in body and "name" in body
    assert not Project.objects.filter(name="").exists()


def test_duplicate_project_slug_gets_400(admin_client_api, project):
    response = admin_client_api.post(
        "/api/v1/projects/", {"slug": "acme", "name": "Again"}, format="json"
    )
    assert response.status_code == 400
    assert "slug" in response.json()


def test_project_slug_cannot_change(admin_client_api, project):
    response = admin_client_api.patch(
        "/api/v1/projects/acme/", {"slug": "other", "name": "N"}, format="json"
    )
    assert response.status_code == 200
    project.refresh_from_db()
    assert project.slug == "acme" and project.name == "N"


def test_deleting_a_project_keeps_its_audit_events(admin_client_api, project):
    before = AuditEvent.objects.filter(project_ref=str(project.pk)).count()
    response = admin_client_api.delete("/api/v1/projects/acme/")
    assert response.status_code == 204
    assert not Project.objects.filter(slug="acme").exists()
    kept = AuditEvent.objects.filter(project_ref=str(project.pk))
    assert kept.count() == before + 1
    assert all(e.project_id is None for e in kept)
    assert kept.last().action == "project.deleted"


# --- Members ------------------------------------------------------------------------------


def test_the_last_admin_cannot_be_demoted_or_removed(admin_client_api, project, admin_user):
    url = f"/api/v1/projects/acme/members/{admin_user.username}/"
    response = admin_client_api.patch(url, {"role": "viewer"}, format="json")
    assert response.status_code == 400
    assert "role" in response.json()
    assert admin_client_api.delete(url).status_code == 400
    assert Membership.objects.get(user=admin_user, project=project).role == Role.ADMIN


def test_adding_an_unknown_user_names_the_field(admin_client_api, project):
    response = admin_client_api.post(
        "/api/v1/projects/acme/members/", {"username": "nobody", "role": "viewer"}, format="json"
    )
    assert response.status_code == 400
    assert "username" in response.json()


def test_adding_a_member_twice_is_a_400(admin_client_api, project):
    user = UserFactory()
    membership_create(project=project, user=user, role=Role.VIEWER)
    response = admin_client_api.post(
        "/api/v1/projects/acme/members/",
        {"username": user.username, "role": "admin"},
        format="json",
    )
    assert response.status_code == 400


def test_unknown_role_is_a_400(admin_client_api, project):
    response = admin_client_api.post(
        "/api/v1/projects/acme/members/",
        {"username": UserFactory().username, "role": "god"},
        format="json",
    )
    assert response.status_code == 400 and "role" in response.json()


# --- Tokens -------------------------------------------------------------------------------


def test_token_is_shown_once_and_stored_hashed(admin_client_api, project):
    response = admin_client_api.post(
        "/api/v1/projects/acme/tokens/", {"name": "ci", "scopes": ["read", "write"]}, format="json"
    )
    assert response.status_code == 201, response.content
    raw = response.json()["token"]
    assert raw.startswith("cpt_")
    token = ApiToken.objects.get(prefix=response.json()["prefix"])
    assert raw not in token.digest and len(token.digest) == 64
    listing = admin_client_api.get("/api/v1/projects/acme/tokens/").json()["results"]
    assert "token" not in listing[0] and raw not in str(listing)
    event = AuditEvent.objects.filter(action="api_token.created").get()
    assert raw not in str(event.data) and raw not in event.object_repr


def test_token_authenticates_as_its_creator_within_its_project(project, admin_user):
    _, raw = api_token_create(project=project, user=admin_user, name="t", scopes=["read"])
    client = bearer(raw)
    assert client.get("/api/v1/projects/acme/members/").status_code == 200
    assert [p["slug"] for p in client.get("/api/v1/projects/").json()["results"]] == ["acme"]


def test_token_of_another_project_gets_404(project, admin_user):
    other = ProjectFactory(slug="other")
    MembershipFactory(user=admin_user, project=other, role=Role.ADMIN)
    _, raw = api_token_create(project=other, user=admin_user, name="t", scopes=["read"])
    assert bearer(raw).get("/api/v1/projects/acme/members/").status_code == 404


def test_read_token_cannot_write(project, admin_user):
    _, raw = api_token_create(project=project, user=admin_user, name="t", scopes=["read"])
    response = bearer(raw).patch("/api/v1/projects/acme/", {"name": "x"}, format="json")
    assert response.status_code == 403
    assert "write" in response.json()["detail"]


def test_write_token_without_read_cannot_list(project, admin_user):
    _, raw = api_token_create(project=project, user=admin_user, name="t", scopes=["write"])
    assert bearer(raw).get("/api/v1/projects/acme/members/").status_code == 403


def test_token_writes_are_audited_as_the_token(project, admin_user):
    token, raw = api_token_create(
        project=project, user=admin_user, name="t", scopes=["read", "write"]
    )
    response = bearer(raw).patch("/api/v1/projects/acme/", {"name": "Via token"}, format="json")
    assert response.status_code == 200
    event = AuditEvent.objects.filter(action="project.updated").get()
    assert event.actor_kind == "api_token"
    assert event.actor_ref == token.prefix
    assert event.actor_id == admin_user.pk


def test_token_power_is_capped_by_the_creators_role(project):
    viewer = UserFactory()
    membership_create(project=project, user=viewer, role=Role.VIEWER)
    _, raw = api_token_create(project=project, user=viewer, name="t", scopes=["read", "write"])
    assert (
        bearer(raw).patch("/api/v1/projects/acme/", {"name": "x"}, format="json").status_code == 403
    )


def test_approve_scope_needs_the_approver_role(project):
    operator = UserFactory()
    membership_create(project=project, user=operator, role=Role.OPERATOR)
    client = APIClient()
    client.force_login(operator)
    response = client.post(
        "/api/v1/projects/acme/tokens/", {"name": "t", "scopes": ["approve"]}, format="json"
    )
    assert response.status_code == 400 and "scopes" in response.json()


@pytest.mark.parametrize(
    "header",
    ["Bearer cpt_deadbeef_nope", "Bearer", "Bearer a b", "Bearer not-a-token"],
)
def test_bad_tokens_get_401_not_anonymous(project, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/projects/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


def test_revoked_and_expired_tokens_are_refused(project, admin_user):
    token, raw = api_token_create(project=project, user=admin_user, name="t", scopes=["read"])
    api_token_revoke(token=token)
    assert bearer(raw).get("/api/v1/projects/").status_code == 401
    token2, raw2 = api_token_create(project=project, user=admin_user, name="t2", scopes=["read"])
    ApiToken.objects.filter(pk=token2.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert bearer(raw2).get("/api/v1/projects/").status_code == 401


def test_token_stops_working_when_its_creator_leaves(project, admin_user):
    member = UserFactory()
    membership = membership_create(project=project, user=member, role=Role.OPERATOR)
    _, raw = api_token_create(project=project, user=member, name="t", scopes=["read"])
    assert bearer(raw).get("/api/v1/projects/acme/").status_code == 200
    membership.delete()
    assert bearer(raw).get("/api/v1/projects/acme/").status_code == 401


def test_tokens_cannot_mint_tokens(project, admin_user):
    _, raw = api_token_create(project=project, user=admin_user, name="t", scopes=["read", "write"])
    response = bearer(raw).post(
        "/api/v1/projects/acme/tokens/", {"name": "x", "scopes": ["read"]}, format="json"
    )
    assert response.status_code == 403


def test_members_see_own_tokens_admins_see_all(project, admin_user):
    viewer = UserFactory()
    membership_create(project=project, user=viewer, role=Role.VIEWER)
    api_token_create(project=project, user=viewer, name="mine", scopes=["read"])
    api_token_create(project=project, user=admin_user, name="admins", scopes=["read"])
    client = APIClient()
    client.force_login(viewer)
    names = [t["name"] for t in client.get("/api/v1/projects/acme/tokens/").json()["results"]]
    assert names == ["mine"]
    client.force_login(admin_user)
    names = {t["name"] for t in client.get("/api/v1/projects/acme/tokens/").json()["results"]}
    assert names == {"mine", "admins"}


def test_revoking_someone_elses_token_needs_admin(project, admin_user):
    viewer = UserFactory()
    membership_create(project=project, user=viewer, role=Role.VIEWER)
    token, _ = api_token_create(project=project, user=admin_user, name="admins", scopes=["read"])
    client = APIClient()
    client.force_login(viewer)
    assert client.delete(f"/api/v1/projects/acme/tokens/{token.prefix}/").status_code == 404
    client.force_login(admin_user)
    assert client.delete(f"/api/v1/projects/acme/tokens/{token.prefix}/").status_code == 204
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_past_expiry_is_a_400(admin_client_api, project):
    response = admin_client_api.post(
        "/api/v1/projects/acme/tokens/",
        {"name": "t", "scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z"},
        format="json",
    )
    assert response.status_code == 400 and "expires_at" in response.json()


def test_request_id_is_echoed_and_recorded(admin_client_api, project):
    response = admin_client_api.patch(
        "/api/v1/projects/acme/", {"name": "R"}, format="json", HTTP_X_REQUEST_ID="req-123"
    )
    assert response["X-Request-ID"] == "req-123"
    assert AuditEvent.objects.get(action="project.updated").request_id == "req-123"

"""UI pages: access rules, project switching, settings forms (plain POST and htmx), audit, approvals."""

from __future__ import annotations

import hashlib
import re

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse
from django_htmx.middleware import HtmxDetails

from approvals.models import ApprovalRequest, ApprovalStatus
from controlplane.htmx import is_partial_request
from controlplane.models import ApiToken, Membership, Role
from controlplane.services import membership_create, project_update
from controlplane.shell import SESSION_PROJECT_KEY
from governance.models import AuditEvent
from tests.factories import UserFactory
from tests.rbac import check_rbac
from tests.ui.conftest import PASSWORD

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
TOKEN_RE = re.compile(r"cpt_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}")

CURRENT_PROJECT_PAGES = [
    "home",
    "agents",
    "tools",
    "flows",
    "runs",
    "approvals",
    "costs",
    "budgets",
    "policies",
    "audit-list",
]


def all_page_urls(project) -> list[str]:
    return [
        *(reverse(name) for name in CURRENT_PROJECT_PAGES),
        reverse("project-list"),
        reverse("project-settings", args=[project.slug]),
    ]


def settings_url(project) -> str:
    return reverse("project-settings", args=[project.slug])


# --- Rendering and access ----------------------------------------------------------------


def test_every_page_renders_for_a_member(alice_client, project):
    for url in all_page_urls(project):
        response = alice_client.get(url)
        assert response.status_code == 200, url
        assert b"Acme" in response.content, url


def test_every_page_renders_for_a_viewer(member_of, project):
    client, _ = member_of(Role.VIEWER)
    for url in all_page_urls(project):
        assert client.get(url).status_code == 200, url


def test_anonymous_is_redirected_to_login(client, project):
    for url in all_page_urls(project):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login") + "?next="), url


def test_user_without_a_project_is_offered_a_create_form(db):
    client = Client()
    client.force_login(UserFactory(username="newcomer"))
    for name in CURRENT_PROJECT_PAGES:
        response = client.get(reverse(name))
        assert response.status_code == 200, name
        assert b"not a member of any project" in response.content
        assert f'action="{reverse("project-list")}"'.encode() in response.content


def test_settings_of_another_project_is_404(alice_client, other_project):
    assert alice_client.get(settings_url(other_project)).status_code == 404
    response = alice_client.post(settings_url(other_project), {"name": "Taken over"})
    assert response.status_code == 404
    other_project.refresh_from_db()
    assert other_project.name == "Globex"


def test_nav_marks_the_current_section(alice_client, project):
    html = alice_client.get(reverse("agents")).content.decode()
    assert re.search(r'href="/agents/"\s+aria-current="page"', html)
    assert not re.search(r'href="/tools/"\s+aria-current="page"', html)


def test_shell_shows_user_logout_form_and_staff_only_admin_link(alice_client, admin_user):
    html = alice_client.get(reverse("home")).content.decode()
    assert admin_user.username in html
    assert re.search(rf'<form method="post" action="{reverse("logout")}"', html)
    assert reverse("api-docs") in html
    assert reverse("admin:index") not in html
    admin_user.is_staff = True
    admin_user.save()
    assert reverse("admin:index") in alice_client.get(reverse("home")).content.decode()


def test_no_page_loads_scripts_or_styles_from_another_host(alice_client, project):
    external = re.compile(
        r"<(?:script|link)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", re.IGNORECASE
    )
    urls = [*all_page_urls(project), reverse("login")]
    for url in urls:
        client = Client() if url == reverse("login") else alice_client
        html = client.get(url).content.decode()
        assert not external.search(html), url
        assert "vendor/htmx/htmx.min.js" in html, url
        assert "vendor/pico/pico.min.css" in html, url


# --- Sign-in ------------------------------------------------------------------------------


def test_login_form_shows_errors_in_place(admin_user):
    client = Client()
    response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert b'class="form-errors" role="alert"' in response.content
    assert b"correct username and password" in response.content


def test_login_form_signs_in_and_lands_on_the_dashboard(admin_user, project):
    client = Client()
    response = client.post(
        reverse("login"), {"username": "alice", "password": PASSWORD}, follow=True
    )
    assert response.redirect_chain[-1][0] == reverse("home")
    assert b"Dashboard" in response.content and b"Acme" in response.content


# --- Dashboard ----------------------------------------------------------------------------


def test_dashboard_counts_and_recent_events(alice_client, project, member_of):
    member_of(Role.VIEWER)
    ApprovalRequest.objects.create(project=project, summary="Send the invoice")
    response = alice_client.get(reverse("home"))
    ctx = response.context
    stats = {stat["label"]: stat["value"] for stat in ctx["stats"]}
    assert stats["Members"] == 2
    # Contributed by the approvals and governance apps through controlplane.extensions.
    assert stats["Pending approvals"] == 1
    assert stats["Audit events, last 24 h"] == AuditEvent.objects.filter(project=project).count()
    recent = {p["template"]: p["data"] for p in ctx["panels"]}
    assert 0 < len(recent["governance/partials/dashboard_recent.html"]["recent_events"]) <= 10
    assert b"project.created" in response.content
    assert b'id="nav-approvals-badge"' in response.content
    assert ctx["role"] == Role.ADMIN


# --- Project switching --------------------------------------------------------------------


def test_project_switch_changes_the_current_project(alice_client, project, second_project):
    assert alice_client.get(reverse("home")).context["project"] == project
    response = alice_client.post(
        reverse("project-switch"), {"project": second_project.slug, "next": reverse("agents")}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("agents")
    assert alice_client.session[SESSION_PROJECT_KEY] == second_project.slug
    home = alice_client.get(reverse("home"))
    assert home.context["project"] == second_project
    assert b"<h1>Initech</h1>" in home.content


def test_project_switch_to_a_project_you_are_not_in_is_404(alice_client, project, other_project):
    response = alice_client.post(reverse("project-switch"), {"project": other_project.slug})
    assert response.status_code == 404
    assert alice_client.session.get(SESSION_PROJECT_KEY) != other_project.slug


def test_project_switch_ignores_an_offsite_next(alice_client, second_project):
    response = alice_client.post(
        reverse("project-switch"),
        {"project": second_project.slug, "next": "https://evil.example/"},
    )
    assert response["Location"] == reverse("home")


def test_project_switch_needs_post(alice_client, second_project):
    assert alice_client.get(reverse("project-switch")).status_code == 405


def test_stale_session_project_falls_back_to_a_project_of_yours(
    alice_client, project, other_project
):
    session = alice_client.session
    session[SESSION_PROJECT_KEY] = other_project.slug
    session.save()
    assert alice_client.get(reverse("home")).context["project"] == project


# --- Project list -------------------------------------------------------------------------


def test_project_create_makes_you_admin_and_current(alice_client, project):
    response = alice_client.post(
        reverse("project-list"), {"slug": "hooli", "name": "Hooli", "description": ""}
    )
    assert response.status_code == 302
    assert Membership.objects.get(project__slug="hooli", user__username="alice").role == "admin"
    assert alice_client.get(reverse("home")).context["project"].slug == "hooli"


def test_project_create_shows_service_errors_in_place(alice_client, project):
    response = alice_client.post(reverse("project-list"), {"slug": "acme", "name": "Again"})
    assert response.status_code == 200
    form = response.context["form"]
    assert "slug" in form.errors
    assert b'id="id_slug_error"' in response.content
    response = alice_client.post(reverse("project-list"), {"slug": "Bad Slug!", "name": "X"})
    assert "slug" in response.context["form"].errors


def test_project_list_shows_your_role(member_of, project):
    client, _ = member_of(Role.OPERATOR)
    html = client.get(reverse("project-list")).content.decode()
    assert "Operator" in html and "acme" in html


# --- Project settings: details and members ----------------------------------------------------


def test_admin_updates_details_with_post_redirect_get(alice_client, project):
    response = alice_client.post(
        settings_url(project), {"name": "Acme Corp", "description": "x", "time_zone": "UTC"}
    )
    assert response.status_code == 302
    project.refresh_from_db()
    assert project.name == "Acme Corp"


def test_details_update_is_admin_only(project):
    check_rbac(
        method="post",
        url=settings_url(project),
        data={"name": "Renamed", "description": "", "time_zone": "UTC"},
        project=project,
        min_role=Role.ADMIN,
        api=False,
        audit_action="project.updated",
    )


def test_member_add_is_admin_only(project):
    check_rbac(
        method="post",
        url=reverse("project-member-add", args=[project.slug]),
        data=lambda: {"username": UserFactory().username, "role": "viewer"},
        project=project,
        min_role=Role.ADMIN,
        api=False,
        audit_action="membership.created",
    )


def test_member_role_change_is_admin_only(project):
    target = UserFactory(username="target")
    membership = membership_create(project=project, user=target, role=Role.VIEWER)
    roles = iter(["operator", "approver", "viewer", "operator", "approver", "viewer"])
    check_rbac(
        method="post",
        url=reverse("project-member-role", args=[project.slug, membership.pk]),
        data=lambda: {"role": next(roles)},
        project=project,
        min_role=Role.ADMIN,
        api=False,
        audit_action="membership.updated",
    )


def test_viewer_cannot_remove_a_member(member_of, project, admin_user):
    client, _ = member_of(Role.VIEWER)
    admin_membership = Membership.objects.get(project=project, user=admin_user)
    url = reverse("project-member-remove", args=[project.slug, admin_membership.pk])
    assert client.post(url).status_code == 403
    assert Membership.objects.filter(pk=admin_membership.pk).exists()


def test_member_add_plain_post_and_htmx(alice_client, project):
    url = reverse("project-member-add", args=[project.slug])
    UserFactory(username="carol")
    response = alice_client.post(url, {"username": "carol", "role": "operator"})
    assert response.status_code == 302
    assert response["Location"].endswith("#members")
    UserFactory(username="dave")
    response = alice_client.post(url, {"username": "dave", "role": "viewer"}, **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="members"')
    assert "<html" not in html
    assert "Added dave as Viewer." in html
    assert set(
        Membership.objects.filter(project=project).values_list("user__username", flat=True)
    ) == {"alice", "carol", "dave"}


def test_member_add_errors_show_in_place(alice_client, project):
    url = reverse("project-member-add", args=[project.slug])
    response = alice_client.post(url, {"username": "nobody", "role": "viewer"})
    assert response.status_code == 200
    assert b"No active user with this username." in response.content
    assert b'id="id_member_add_username_error"' in response.content
    response = alice_client.post(url, {"username": "alice", "role": "viewer"}, **HTMX)
    assert b"already a member" in response.content
    assert b"<html" not in response.content


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_last_admin_cannot_step_down_and_the_error_shows_in_place(
    alice_client, project, admin_user, htmx
):
    membership = Membership.objects.get(project=project, user=admin_user)
    headers = HTMX if htmx else {}
    response = alice_client.post(
        reverse("project-member-role", args=[project.slug, membership.pk]),
        {"role": "viewer"},
        **headers,
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "A project needs at least one admin." in html
    row = html[html.index(f'id="member-{membership.pk}"') :]
    assert row.index("A project needs at least one admin.") < row.index("</tr>")
    assert ("<html" in html) is not htmx
    membership.refresh_from_db()
    assert membership.role == Role.ADMIN


def test_last_admin_cannot_be_removed(alice_client, project, admin_user):
    membership = Membership.objects.get(project=project, user=admin_user)
    response = alice_client.post(
        reverse("project-member-remove", args=[project.slug, membership.pk]), **HTMX
    )
    assert response.status_code == 200
    assert b"A project needs at least one admin." in response.content
    assert Membership.objects.filter(pk=membership.pk).exists()


def test_admin_removes_a_member(alice_client, project, member_of):
    _, bob = member_of(Role.OPERATOR, username="bob")
    membership = Membership.objects.get(project=project, user=bob)
    response = alice_client.post(
        reverse("project-member-remove", args=[project.slug, membership.pk])
    )
    assert response.status_code == 302
    assert not Membership.objects.filter(pk=membership.pk).exists()


def test_membership_of_another_project_is_404(alice_client, project, other_project):
    foreign = Membership.objects.get(project=other_project)
    url = reverse("project-member-role", args=[project.slug, foreign.pk])
    assert alice_client.post(url, {"role": "viewer"}).status_code == 404


def test_removing_yourself_sends_you_home(alice_client, project, admin_user):
    membership_create(project=project, user=UserFactory(username="erin"), role=Role.ADMIN)
    membership = Membership.objects.get(project=project, user=admin_user)
    response = alice_client.post(
        reverse("project-member-remove", args=[project.slug, membership.pk]), **HTMX
    )
    assert response["HX-Redirect"] == reverse("home")


# --- Project settings: API tokens ------------------------------------------------------------


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
def test_token_plaintext_is_shown_once_and_only_a_digest_is_stored(alice_client, project, htmx):
    response = alice_client.post(
        reverse("project-token-create", args=[project.slug]),
        {"name": "ci", "scopes": ["read", "write"], "expires_in_days": "30"},
        **(HTMX if htmx else {}),
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    match = TOKEN_RE.search(html)
    assert match, html
    plaintext = match.group(0)
    assert "will not be shown again" in html
    token = ApiToken.objects.get(project=project, name="ci")
    assert token.digest != plaintext
    assert token.digest == hashlib.sha256(plaintext.encode()).hexdigest()
    assert token.scopes == ["read", "write"]
    again = alice_client.get(settings_url(project)).content.decode()
    assert plaintext not in again
    assert token.prefix in again
    assert not TOKEN_RE.search(again)
    assert plaintext not in str(dict(alice_client.session))


def test_token_create_errors_show_in_place(member_of, project):
    client, _ = member_of(Role.VIEWER)
    url = reverse("project-token-create", args=[project.slug])
    response = client.post(url, {"name": "mine", "scopes": ["approve"]})
    assert response.status_code == 200
    assert b"needs the approver role" in response.content
    assert b'id="id_token_scopes_error"' in response.content
    response = client.post(url, {"name": "", "scopes": []}, **HTMX)
    assert response.context["token_form"].errors.keys() == {"name", "scopes"}
    assert not ApiToken.objects.exists()


def test_token_list_visibility_and_revoke(alice_client, project, member_of):
    viewer_client, viewer = member_of(Role.VIEWER, username="vic")
    url = reverse("project-token-create", args=[project.slug])
    viewer_client.post(url, {"name": "vic-token", "scopes": ["read"]})
    alice_client.post(url, {"name": "alice-token", "scopes": ["read"]})
    alice_token = ApiToken.objects.get(name="alice-token")
    viewer_token = ApiToken.objects.get(name="vic-token")
    viewer_page = viewer_client.get(settings_url(project)).content.decode()
    assert "vic-token" in viewer_page and "alice-token" not in viewer_page
    assert "alice-token" in alice_client.get(settings_url(project)).content.decode()

    revoke = reverse("project-token-revoke", args=[project.slug, alice_token.prefix])
    assert viewer_client.post(revoke).status_code == 404
    response = alice_client.post(
        reverse("project-token-revoke", args=[project.slug, viewer_token.prefix]), **HTMX
    )
    assert response.status_code == 200 and b"Revoked token vic-token." in response.content
    viewer_token.refresh_from_db()
    assert viewer_token.revoked_at is not None


# --- Audit --------------------------------------------------------------------------------


def test_audit_lists_events_of_the_current_project_only(
    alice_client, project, second_project, other_project
):
    response = alice_client.get(reverse("audit-list"))
    shown = {event.sequence for event, _ in response.context["rows"]}
    mine = set(AuditEvent.objects.filter(project=project).values_list("sequence", flat=True))
    assert shown == mine
    html = response.content.decode()
    for seq in AuditEvent.objects.exclude(project=project).values_list("sequence", flat=True):
        assert f'id="audit-{seq}"' not in html
    assert "<details>" in html and "project.created" in html


def test_audit_filters_by_action_prefix_and_actor(alice_client, project, member_of):
    _, bob = member_of(Role.VIEWER, username="bob")
    response = alice_client.get(reverse("audit-list"), {"action": "membership."})
    actions = {event.action for event, _ in response.context["rows"]}
    assert actions and all(action.startswith("membership.") for action in actions)
    response = alice_client.get(reverse("audit-list"), {"actor": "nobody-like-this"})
    assert response.context["rows"] == []
    assert b"match these filters" in response.content


def test_audit_pages_by_sequence_with_load_more(alice_client, project):
    for i in range(55):
        project_update(project=project, name=f"Acme {i}")
    response = alice_client.get(reverse("audit-list"))
    rows = response.context["rows"]
    assert len(rows) == 50
    next_before = response.context["next_before"]
    assert next_before == rows[-1][0].sequence
    first_page = response.content.decode()
    assert re.search(rf'hx-get="\?before={next_before}"', first_page)
    assert re.search(rf'href="\?before={next_before}"', first_page)  # works without JS

    more = alice_client.get(reverse("audit-list"), {"before": next_before}, **HTMX)
    html = more.content.decode()
    assert "<html" not in html and html.lstrip().startswith("<tbody")
    older = [event.sequence for event, _ in more.context["rows"]]
    assert older and max(older) < next_before
    total = AuditEvent.objects.filter(project=project).count()
    assert len(rows) + len(older) == total
    assert 'id="audit-more"' not in html  # nothing older left


# --- Approvals ----------------------------------------------------------------------------


def test_approvals_lists_pending_and_decided_tabs_and_updates_the_badge(
    alice_client, project, other_project
):
    ApprovalRequest.objects.create(
        project=project, summary="Old decided", status=ApprovalStatus.APPROVED
    )
    ApprovalRequest.objects.create(project=project, summary="Refund 40 EUR")
    ApprovalRequest.objects.create(project=other_project, summary="Other tenant's request")
    response = alice_client.get(reverse("approvals"))
    html = response.content.decode()
    # The inbox's pending tab holds pending requests; the decided tab the history.
    assert "Refund 40 EUR" in html and "Old decided" not in html
    decided = alice_client.get(reverse("approvals") + "?tab=decided").content.decode()
    assert "Old decided" in decided and "Refund 40 EUR" not in decided
    assert "Other tenant" not in html + decided
    assert re.search(r'id="nav-approvals-badge" class="badge">\s*1', html)
    assert html.count('id="nav-approvals-badge"') == 1

    partial = alice_client.get(reverse("approvals"), **HTMX).content.decode()
    assert "<html" not in partial
    assert 'id="nav-approvals-badge" class="badge" hx-swap-oob="true"' in partial


def test_approvals_empty_state(alice_client, project):
    html = alice_client.get(reverse("approvals")).content.decode()
    assert "No approval requests" in html and reverse("api-docs") in html
    assert re.search(r'id="nav-approvals-badge" class="badge" hidden', html)


@pytest.mark.parametrize(
    "name", ["agents", "tools", "flows", "runs", "costs", "budgets", "policies"]
)
def test_later_sections_show_an_honest_empty_state(alice_client, project, name):
    html = alice_client.get(reverse(name)).content.decode()
    assert 'class="empty-state"' in html
    assert reverse("api-docs") in html


# --- The htmx helper ------------------------------------------------------------------------


def test_partial_only_for_non_boosted_htmx_requests():
    factory = RequestFactory()
    plain = factory.get("/")
    plain.htmx = HtmxDetails(plain)
    swap = factory.get("/", headers={"HX-Request": "true"})
    swap.htmx = HtmxDetails(swap)
    boosted = factory.get("/", headers={"HX-Request": "true", "HX-Boosted": "true"})
    boosted.htmx = HtmxDetails(boosted)
    assert not is_partial_request(plain)
    assert is_partial_request(swap)
    assert not is_partial_request(boosted)

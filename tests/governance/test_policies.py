"""Project policies: the document schema, versions (immutable, activate, rollback, active at),
effective policy, REST and pages with inline errors; an invalid document changes nothing."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone

from controlplane.immutable import ImmutableError
from controlplane.models import Role
from governance.models import AuditEvent, Policy, PolicyVersion
from governance.policies import DEFAULT_POLICY_SLUG
from governance.policy import PolicyDocumentError, parse_policy_text, policy_json_schema
from governance.selectors import effective_policy, policy_diff, policy_version_active_at
from governance.services import policy_activate, policy_create, policy_version_create
from tests.rbac import check_rbac, member_client

pytestmark = pytest.mark.django_db

API = "/api/v1/projects/acme"
V1 = """\
# first
caps:
  max_tool_calls_per_run: 10
default_approver_role: approver
"""
V2 = """\
caps:
  max_tool_calls_per_run: 20
  max_steps_per_run: 5
allowed_model_endpoints: [local]
pii:
  model_input:
    US_SSN: {action: block}
"""
BAD = """\
caps:
  max_tool_calls_per_run: 0
  max_steps: 3
default_approver_role: root
circuit_breaker: {error_rate: 2}
"""
_slugs = itertools.count(1)


@pytest.fixture
def policy(project, admin_user):
    return policy_create(project=project, slug=DEFAULT_POLICY_SLUG, actor=admin_user)


def issues(text: str) -> dict[str, str]:
    with pytest.raises(PolicyDocumentError) as caught:
        parse_policy_text(text)
    return {issue.path: issue.message for issue in caught.value.issues}


class TestDocument:
    def test_empty_document_is_the_defaults(self):
        parsed = parse_policy_text("")
        assert parsed.document.caps.max_steps_per_run is None
        assert parsed.document.default_approver_role == "approver"
        assert parsed.document.allows_model_endpoint("anything")

    def test_every_error_comes_back_at_once_with_its_path(self):
        found = issues(BAD)
        assert set(found) == {
            "caps",
            "caps.max_tool_calls_per_run",
            "circuit_breaker.error_rate",
            "default_approver_role",
        }
        assert "max_steps" in found["caps"]  # an unknown key is named
        assert "minimum of 1" in found["caps.max_tool_calls_per_run"]
        assert "'root' is not one of" in found["default_approver_role"]

    def test_yaml_syntax_error_has_line_and_column(self):
        found = issues("caps:\n  max_steps_per_run: [1,\n")
        assert list(found) == [""]
        assert "YAML syntax error at line 3" in found[""]

    def test_a_document_must_be_a_mapping(self):
        assert issues("- a\n- b\n") == {"": "A policy must be a mapping of sections."}

    def test_pii_section_is_checked(self):
        found = issues("pii:\n  model_input:\n    US_SSN: {action: shred}\n  sideways: {}\n")
        assert any(path.startswith("pii.model_input.US_SSN") for path in found), found
        assert any("sideways" in path or "sideways" in msg for path, msg in found.items()), found

    def test_a_rule_for_a_recognizer_turned_off_is_an_error(self, settings):
        text = "pii:\n  model_input:\n    UK_NHS: {action: block}\n"
        settings.PII_ENABLE_UK_NHS = False
        assert "PII_ENABLE_UK_NHS" in issues(text)["pii.model_input.UK_NHS"]
        settings.PII_ENABLE_UK_NHS = True
        assert parse_policy_text(text).document.pii.rules_for("model_input")["UK_NHS"]

    def test_pii_rules_lay_over_the_secret_defaults(self):
        document = parse_policy_text(
            "pii:\n  model_input:\n    US_SSN: {action: block}\n"
            "    OPENAI_API_KEY: {action: redact}\n"
        ).document
        rules = document.pii_policy.rules_for("model_input")
        assert rules["US_SSN"].action == "block"
        assert rules["OPENAI_API_KEY"].action == "redact"  # the document wins...
        assert rules["GITHUB_TOKEN"].action == "block"  # ...and other secrets stay blocked
        assert document.pii_policy.rules_for("audit")["GITHUB_TOKEN"].action == "redact"
        assert parse_policy_text("").document.pii_policy.rules_for("model_input")[
            "AWS_ACCESS_KEY_ID"
        ]

    def test_the_schema_embeds_the_pii_section(self):
        schema = policy_json_schema()
        assert "PiiPolicy" in schema["$defs"]
        assert set(schema["properties"]) == {
            "pii",
            "caps",
            "allowed_model_endpoints",
            "default_approver_role",
            "circuit_breaker",
        }


class TestVersions:
    def test_versions_activate_and_roll_back(self, policy, admin_user):
        v1 = policy_version_create(policy=policy, document=V1, actor=admin_user)
        v2 = policy_version_create(
            policy=policy, document=V2, change_note="tighter", actor=admin_user
        )
        policy.refresh_from_db()
        assert (v1.number, v2.number, policy.active_version) == (1, 2, v2)
        assert v2.spec["caps"] == {"max_tool_calls_per_run": 20, "max_steps_per_run": 5}
        policy_activate(version=v1, actor=admin_user)
        policy.refresh_from_db()
        assert policy.active_version == v1
        actions = list(
            AuditEvent.objects.filter(object_type="governance.policy").values_list(
                "action", "data__version"
            )
        )
        assert actions == [
            ("policy.created", None),
            ("policy.version.created", 1),
            ("policy.activated", 1),
            ("policy.version.created", 2),
            ("policy.activated", 2),
            ("policy.activated", 1),
        ]
        rollback = AuditEvent.objects.filter(action="policy.activated").last()
        assert rollback.data == {"version": 1, "previous_version": 2, "rollback": True}

    def test_an_invalid_document_changes_nothing(self, policy, admin_user):
        v1 = policy_version_create(policy=policy, document=V1, actor=admin_user)
        events = AuditEvent.objects.count()
        with pytest.raises(ValidationError) as caught:
            policy_version_create(policy=policy, document=BAD, actor=admin_user)
        assert "document.caps.max_tool_calls_per_run" in caught.value.message_dict
        policy.refresh_from_db()
        assert policy.active_version == v1
        assert policy.versions.count() == 1
        assert AuditEvent.objects.count() == events

    def test_versions_are_immutable(self, policy, admin_user):
        v1 = policy_version_create(policy=policy, document=V1, actor=admin_user)
        v1.document = "caps: {}"
        with pytest.raises(ImmutableError):
            v1.save()
        with pytest.raises(ImmutableError):
            v1.delete()
        with pytest.raises(ImmutableError):
            PolicyVersion.objects.filter(pk=v1.pk).update(document="")

    def test_save_without_activating(self, policy, admin_user):
        v1 = policy_version_create(policy=policy, document=V1, actor=admin_user)
        policy_version_create(policy=policy, document=V2, activate=False, actor=admin_user)
        policy.refresh_from_db()
        assert policy.active_version == v1

    def test_active_at(self, policy, admin_user):
        before = timezone.now()
        v1 = policy_version_create(policy=policy, document=V1, actor=admin_user)
        middle = timezone.now()
        v2 = policy_version_create(policy=policy, document=V2, actor=admin_user)
        assert policy_version_active_at(policy=policy, at=before - timedelta(seconds=1)) is None
        assert policy_version_active_at(policy=policy, at=middle) == v1
        assert policy_version_active_at(policy=policy, at=timezone.now()) == v2

    def test_diff(self, policy, admin_user):
        v1 = policy_version_create(policy=policy, document=V1, actor=admin_user)
        v2 = policy_version_create(policy=policy, document=V2, actor=admin_user)
        diff = policy_diff(v1, v2)
        changes = {c["path"]: (c["old"], c["new"]) for c in diff["changes"]}
        assert changes["caps.max_tool_calls_per_run"] == (10, 20)
        assert changes["caps.max_steps_per_run"] == (None, 5)
        assert changes["allowed_model_endpoints"] == (None, ["local"])
        assert "-# first" in diff["document"]


class TestEffectivePolicy:
    def test_defaults_without_a_policy(self, project):
        snapshot = effective_policy(project_id=project.pk)
        assert (snapshot.version_id, snapshot.label) == (None, "built-in defaults")

    def test_the_default_policy_applies(self, project, policy, admin_user):
        v1 = policy_version_create(policy=policy, document=V1, actor=admin_user)
        snapshot = effective_policy(project_id=project.pk)
        assert (snapshot.version_id, snapshot.label) == (v1.pk, "default v1")
        assert snapshot.document.caps.max_tool_calls_per_run == 10

    def test_a_named_policy_wins_and_must_belong_to_the_project(self, project, policy, admin_user):
        policy_version_create(policy=policy, document=V1, actor=admin_user)
        strict = policy_create(project=project, slug="strict", actor=admin_user)
        v = policy_version_create(policy=strict, document=V2, actor=admin_user)
        assert effective_policy(project_id=project.pk, policy_id=strict.pk).version_id == v.pk
        with pytest.raises(Policy.DoesNotExist):
            effective_policy(project_id=project.pk + 1000, policy_id=strict.pk)


class TestApi:
    def client(self, project, role=Role.ADMIN):
        client, _ = member_client(project, role)
        return client

    def test_rbac(self, project, policy, admin_user):
        policy_version_create(policy=policy, document=V1, actor=admin_user)
        check_rbac(method="get", url=f"{API}/policies/", project=project, min_role=Role.VIEWER)
        check_rbac(
            method="get",
            url=f"{API}/policies/default/versions/1/",
            project=project,
            min_role=Role.VIEWER,
        )
        check_rbac(
            method="post",
            url=f"{API}/policies/",
            data=lambda: {"slug": f"p-{next(_slugs)}", "document": V1},
            project=project,
            min_role=Role.ADMIN,
            audit_action="policy.created",
        )
        check_rbac(
            method="post",
            url=f"{API}/policies/default/versions/",
            data={"document": V2},
            project=project,
            min_role=Role.ADMIN,
            audit_action="policy.version.created",
        )
        check_rbac(
            method="post",
            url=f"{API}/policies/default/versions/1/activate/",
            project=project,
            min_role=Role.ADMIN,
            audit_action="policy.activated",
        )
        check_rbac(
            method="post",
            url=f"{API}/policies/validate/",
            data={"document": V1},
            project=project,
            min_role=Role.VIEWER,
        )

    def test_invalid_version_is_400_with_paths_and_nothing_changes(
        self, project, policy, admin_user
    ):
        policy_version_create(policy=policy, document=V1, actor=admin_user)
        response = self.client(project).post(
            f"{API}/policies/default/versions/", {"document": BAD}, format="json"
        )
        assert response.status_code == 400
        assert "minimum of 1" in response.json()["document.caps.max_tool_calls_per_run"][0]
        assert "document.default_approver_role" in response.json()
        policy.refresh_from_db()
        assert policy.active_version.number == 1

    def test_create_with_first_version_and_bad_document_creates_nothing(self, project):
        client = self.client(project)
        response = client.post(f"{API}/policies/", {"slug": "x", "document": BAD}, format="json")
        assert response.status_code == 400
        assert not Policy.objects.filter(slug="x").exists()
        response = client.post(f"{API}/policies/", {"slug": "x", "document": V1}, format="json")
        assert response.status_code == 201
        assert response.json()["active_version"] == 1
        taken = client.post(f"{API}/policies/", {"slug": "x"}, format="json")
        assert taken.status_code == 400

    def test_versions_cannot_be_edited(self, project, policy, admin_user):
        policy_version_create(policy=policy, document=V1, actor=admin_user)
        client = self.client(project)
        url = f"{API}/policies/default/versions/1/"
        for method in ("put", "patch", "delete"):
            assert getattr(client, method)(url, {"document": V2}, format="json").status_code == 405

    def test_validate_diff_active_at(self, project, policy, admin_user):
        policy_version_create(policy=policy, document=V1, actor=admin_user)
        policy_version_create(policy=policy, document=V2, actor=admin_user)
        client = self.client(project, Role.VIEWER)
        ok = client.post(f"{API}/policies/validate/", {"document": V2}, format="json")
        assert ok.status_code == 200 and ok.json()["spec"]["caps"]["max_steps_per_run"] == 5
        bad = client.post(f"{API}/policies/validate/", {"document": "caps: 3"}, format="json")
        assert bad.status_code == 400 and "document.caps" in bad.json()
        diff = client.get(f"{API}/policies/default/diff/?old=1&new=2")
        assert diff.status_code == 200
        assert {"path": "caps.max_tool_calls_per_run", "old": 10, "new": 20} in diff.json()[
            "changes"
        ]
        missing = client.get(f"{API}/policies/default/diff/?old=1&new=9")
        assert missing.status_code == 400 and "new" in missing.json()
        at = client.get(f"{API}/policies/default/active-at/", {"at": timezone.now().isoformat()})
        assert at.status_code == 200 and at.json()["number"] == 2
        bad_at = client.get(f"{API}/policies/default/active-at/?at=yesterday")
        assert bad_at.status_code == 400 and "at" in bad_at.json()


class TestPages:
    def page_client(self, project, role=Role.ADMIN) -> Client:
        client, _ = member_client(project, role, api=False)
        return client

    def test_rbac_on_pages(self, project, policy, admin_user):
        policy_version_create(policy=policy, document=V1, actor=admin_user)
        check_rbac(
            method="get", url="/policies/default/", project=project, min_role=Role.VIEWER, api=False
        )
        check_rbac(
            method="post",
            url="/policies/default/",
            data={"document": V2, "change_note": "x", "project": project.slug},
            project=project,
            min_role=Role.ADMIN,
            api=False,
            audit_action="policy.version.created",
        )
        check_rbac(
            method="post",
            url="/policies/default/versions/1/activate",
            data={"project": project.slug},
            project=project,
            min_role=Role.ADMIN,
            api=False,
            audit_action="policy.activated",
        )

    def test_editor_shows_every_error_in_place_and_keeps_the_text(
        self, project, policy, admin_user
    ):
        policy_version_create(policy=policy, document=V1, actor=admin_user)
        client = self.page_client(project)
        response = client.post("/policies/default/", {"document": BAD, "project": project.slug})
        assert response.status_code == 400
        body = response.content.decode()
        assert "nothing was saved" in body
        for path in (
            "caps.max_tool_calls_per_run",
            "default_approver_role",
            "circuit_breaker.error_rate",
        ):
            assert f"<code>{path}</code>" in body
        assert "max_steps: 3" in body  # the text is kept for fixing
        policy.refresh_from_db()
        assert policy.active_version.number == 1

    def test_save_activate_and_diff_pages(self, project, policy, admin_user):
        client = self.page_client(project)
        response = client.post(
            "/policies/default/", {"document": V1, "change_note": "first", "project": project.slug}
        )
        assert response.status_code == 302
        client.post("/policies/default/", {"document": V2, "project": project.slug})
        page = client.get("/policies/default/").content.decode()
        assert "version 2 is active" in page and "Roll back to v1" in page
        client.post("/policies/default/versions/1/activate", {"project": project.slug})
        policy.refresh_from_db()
        assert policy.active_version.number == 1
        diff = client.get("/policies/default/diff?old=1&new=2").content.decode()
        assert 'data-path="caps.max_steps_per_run"' in diff
        assert client.get("/policies/default/diff?old=1&new=7").status_code == 400

    def test_live_validation_partial(self, project, policy):
        client = self.page_client(project, Role.VIEWER)
        bad = client.post(
            "/policies/default/validate", {"document": "caps: [1]"}, HTTP_HX_REQUEST="true"
        )
        assert "<code>caps</code>" in bad.content.decode()
        ok = client.post("/policies/default/validate", {"document": V1}, HTTP_HX_REQUEST="true")
        assert "The document is valid." in ok.content.decode()

    def test_viewer_sees_no_editor(self, project, policy, admin_user):
        policy_version_create(policy=policy, document=V1, actor=admin_user)
        page = self.page_client(project, Role.VIEWER).get("/policies/default/").content.decode()
        assert "Save as a new version" not in page
        assert "needs the admin role" in page

"""Audit hardening: audit data passes the PII scanner (direction ``audit``) before it is
written, under the project's policy; a block rule or a failing scan withholds it."""

from __future__ import annotations

import pytest

from governance.selectors import audit_chain_verify
from governance.services import audit_record, policy_create, policy_version_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def audit_policy(project, admin_user):
    def install(rules: str):
        policy = policy_create(project=project, slug="default", actor=admin_user)
        policy_version_create(policy=policy, document=f"pii:\n  audit:\n{rules}", actor=admin_user)

    return install


def test_without_a_policy_plain_data_is_kept(project):
    event = audit_record(action="test.note", project=project, data={"note": "hello", "n": 3})
    assert event.data == {"note": "hello", "n": 3}


def test_the_policy_redacts_audit_data_and_counts_what_it_removed(project, audit_policy):
    audit_policy("    EMAIL_ADDRESS: {action: redact}\n    US_SSN: {action: mask}\n")
    event = audit_record(
        action="test.note",
        project=project,
        data={
            "to": "jane.doe@example.com",
            "body": {"ssn": "my social security number is 536-90-4399"},
            "n": 1,
        },
    )
    event.refresh_from_db()
    assert event.data["to"] == "<EMAIL_ADDRESS>"
    assert "536-90-4399" not in str(event.data)
    assert event.data["n"] == 1
    assert event.data["pii"] == {"EMAIL_ADDRESS": 1, "US_SSN": 1}
    assert audit_chain_verify().ok


def test_a_block_rule_withholds_the_data(project, audit_policy):
    audit_policy("    EMAIL_ADDRESS: {action: block}\n")
    event = audit_record(action="test.note", project=project, data={"to": "jane.doe@example.com"})
    assert event.data == {
        "withheld": "blocked by the audit PII policy",
        "pii": {"EMAIL_ADDRESS": 1},
    }
    assert "jane" not in str(event.data)


def test_a_failing_scan_withholds_the_data(project, audit_policy, settings):
    audit_policy("    PERSON: {action: redact}\n")
    settings.PII_SPACY_MODEL = "no_such_spacy_model"  # the scanner cannot be built
    event = audit_record(action="test.note", project=project, data={"who": "Jane Doe"})
    assert set(event.data) == {"withheld"}
    assert "PII scan failed" in event.data["withheld"]
    assert "Jane" not in str(event.data)


def test_the_audit_policy_is_cached_briefly_and_forgotten_on_activation(project, admin_user):
    from governance.policies import audit_policy

    first = audit_policy(project_id=project.pk)
    assert audit_policy(project_id=project.pk) is first  # within the TTL: no query
    policy = policy_create(project=project, slug="default", actor=admin_user)
    version = policy_version_create(
        policy=policy, document="pii:\n  audit:\n    EMAIL_ADDRESS: {action: redact}\n"
    )
    assert audit_policy(project_id=project.pk).version_id == version.pk

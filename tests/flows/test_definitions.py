"""Flow definitions: validated all at once with every error at its path; a rejected
version stores nothing and the previous version stays active; versions are immutable."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError

from controlplane.immutable import ImmutableError
from flows.definition import parse_definition
from flows.models import Flow, FlowVersion
from flows.services import flow_create, flow_version_activate, flow_version_create
from governance.models import AuditEvent

pytestmark = pytest.mark.django_db

GOOD = """
steps:
  - {id: a, kind: tool, tool: echo, agent: operator, arguments: {text: "{{ input.x }}"}}
  - {id: b, kind: agent, agent: writer, input: "{{ steps.a.text }}", depends_on: [a]}
"""


def errors_of(call) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        call()
    return caught.value.message_dict


def test_every_error_is_reported_at_its_path_at_once():
    bad = {
        "steps": [
            {"id": "a", "kind": "agent", "agent": "x", "input": "{{ oops", "depends_on": ["zz"]},
            {"id": "a", "kind": "tool", "tool": "t", "agent": "x", "retries": {"max_attempts": 0}},
            {
                "id": "r",
                "kind": "router",
                "rules": [{"when": "input.size >", "then": "x"}],
                "branches": {"x": ["a"]},
            },
            {
                "id": "m",
                "kind": "map",
                "over": "input.items |",
                "step": {"kind": "tool", "tool": "t", "agent": "x"},
            },
            {"id": "c", "kind": "bogus"},
        ]
    }
    errors = errors_of(lambda: parse_definition(bad))
    assert "template syntax error" in errors["definition.steps.0.input"][0]
    assert errors["definition.steps.0.depends_on.0"] == ["no step 'zz'"]
    assert errors["definition.steps.1.id"] == ["duplicate step id 'a'"]
    assert "greater than or equal to 1" in errors["definition.steps.1.retries.max_attempts"][0]
    assert "CEL syntax error at line 1" in errors["definition.steps.2.rules.0.when"][0]
    assert "expression syntax error" in errors["definition.steps.3.over"][0]
    assert "does not match any of the expected tags" in errors["definition.steps.4"][0]


def test_cycles_and_unknown_branches_are_rejected():
    cycle = {
        "steps": [
            {"id": "a", "kind": "tool", "tool": "t", "agent": "x", "depends_on": ["c"]},
            {"id": "b", "kind": "tool", "tool": "t", "agent": "x", "depends_on": ["a"]},
            {"id": "c", "kind": "tool", "tool": "t", "agent": "x", "next": [], "depends_on": ["b"]},
        ]
    }
    [(path, [message])] = errors_of(lambda: parse_definition(cycle)).items()
    assert path.startswith("definition.steps.") and message.startswith("cycle: ")
    router = {
        "steps": [
            {
                "id": "r",
                "kind": "router",
                "rules": [{"when": "true", "then": "nope"}],
                "branches": {"x": ["ghost"]},
            },
        ]
    }
    errors = errors_of(lambda: parse_definition(router))
    assert "no branch named 'nope'" in str(errors)
    unknown = {
        "steps": [
            {
                "id": "r",
                "kind": "router",
                "rules": [{"when": "secret == 1", "then": "x"}],
                "branches": {"x": []},
            }
        ]
    }
    assert "Unknown variable(s) secret" in str(errors_of(lambda: parse_definition(unknown)))


def test_a_flow_is_created_with_an_active_first_version(project, admin_user, world):
    flow = flow_create(project=project, slug="pipe", source=GOOD, actor=admin_user)
    version = flow.active_version
    assert (version.number, version.source, version.source_format) == (1, GOOD, "yaml")
    assert version.definition["steps"][1]["depends_on"] == ["a"]
    assert AuditEvent.objects.filter(
        action="flow.version.activated", object_id=str(flow.pk)
    ).exists()
    with pytest.raises(ImmutableError):
        version.save()


def test_an_invalid_new_version_stores_nothing_and_the_previous_stays(project, admin_user, world):
    flow = flow_create(project=project, slug="pipe", source=GOOD, actor=admin_user)
    bad = GOOD.replace("agent: writer", "agent: ghost").replace("tool: echo", "tool: nothing")
    errors = errors_of(lambda: flow_version_create(flow=flow, source=bad, actor=admin_user))
    assert errors == {
        "definition.steps.1.agent": ["no agent 'ghost' with an active version in this project"],
        "definition.steps.0.tool": ["no tool 'nothing' in this project"],
    }
    flow.refresh_from_db()
    assert flow.active_version.number == 1
    assert FlowVersion.objects.filter(flow=flow).count() == 1
    broken_yaml = errors_of(
        lambda: flow_version_create(flow=flow, source="steps: [", actor=admin_user)
    )
    assert "YAML does not parse" in broken_yaml["definition"][0]


def test_json_sources_versions_and_rollback(project, admin_user, world):
    flow = flow_create(project=project, slug="pipe", source=GOOD, actor=admin_user)
    data = {
        "steps": [
            {
                "id": "only",
                "kind": "tool",
                "tool": "echo",
                "agent": "operator",
                "arguments": {"text": "x"},
            }
        ]
    }
    v2 = flow_version_create(
        flow=flow, source=json.dumps(data), source_format="json", actor=admin_user
    )
    assert v2.number == 2 and Flow.objects.get(pk=flow.pk).active_version == v2
    flow_version_activate(version=flow.versions.get(number=1), actor=admin_user)
    assert Flow.objects.get(pk=flow.pk).active_version.number == 1


def test_a_new_flow_with_errors_everywhere_reports_all_and_stores_nothing(
    project, admin_user, world
):
    flow_create(project=project, slug="taken", source=GOOD, actor=admin_user)
    errors = errors_of(
        lambda: flow_create(project=project, slug="taken", source="steps: []", actor=admin_user)
    )
    assert "slug" in errors and "definition.steps" in errors
    assert Flow.objects.count() == 1

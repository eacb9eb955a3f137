"""Fuzzing the REST API with schemathesis against the live OpenAPI schema.

Every operation the schema lists (so endpoints added later are fuzzed too) is called with
generated data, as an admin token (read + write + approve) and as a viewer token (read),
in a project seeded with real objects (``tests.seed``), so that operations also find real
agents, policies, budgets and turns, not only 404s. Checks: no 5xx, status codes, content
types, headers and bodies as the schema documents them (errors included, see
``controlplane.api.schema.add_error_responses``).

Deterministic enough for CI: hypothesis is derandomized (fixed seed) with no example
database and no deadline. ``FUZZ_EXAMPLES`` (default 550 per token kind) sets the budget.
"""

from __future__ import annotations

import os
from collections import Counter

import hypothesis
import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from controlplane.models import Membership, Role
from controlplane.services import api_token_create
from tests.factories import UserFactory
from tests.seed import seed_project

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "550"))
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Values of path parameters that name seeded objects: a case uses one of them about half
# of the time, so operations reach real objects as well as 404s.
KNOWN = {
    "agent": ["helper"],
    "policy": ["default"],
    "name": ["scripted", "echo", "notify", "monthly", "tiny"],
    "number": [1, 2],
    "username": ["alice", "viewer"],
}


@pytest.fixture
def fuzz_project(project, admin_user):
    seed_project(project, admin_user)
    viewer = UserFactory(username="viewer")
    Membership.objects.create(user=viewer, project=project, role=Role.VIEWER)
    _, admin_token = api_token_create(
        project=project, user=admin_user, name="fuzz-admin", scopes=["read", "write", "approve"]
    )
    _, viewer_token = api_token_create(
        project=project, user=viewer, name="fuzz-viewer", scopes=["read"]
    )
    return project, {"admin": admin_token, "viewer": viewer_token}


def _live_schema():
    return schemathesis.openapi.from_wsgi("/api/v1/schema/?format=json", get_wsgi_application())


def _known_ids(project) -> dict[str, list]:
    from agents.models import AgentActivation, AgentTurn
    from governance.models import AuditEvent, BudgetAlert, BudgetPeriod, CostEntry

    return {
        "id": [
            *AgentTurn.objects.values_list("pk", flat=True)[:2],
            *AgentActivation.objects.values_list("pk", flat=True)[:1],
            *BudgetAlert.objects.values_list("pk", flat=True)[:1],
            *BudgetPeriod.objects.values_list("pk", flat=True)[:1],
        ],
        "sequence": list(AuditEvent.objects.values_list("sequence", flat=True)[:3]),
        "call_id": list(CostEntry.objects.values_list("call_id", flat=True)[:2]),
    }


@pytest.mark.parametrize("kind", ["admin", "viewer"])
def test_fuzz_the_api(fuzz_project, kind):
    project, tokens = fuzz_project
    schema = _live_schema()
    known = {**KNOWN, **_known_ids(project)}
    headers = {"Authorization": f"Bearer {tokens[kind]}"}
    failures: dict[str, str] = {}
    statuses: Counter[int] = Counter()
    strategy = st.one_of(
        schema.as_strategy(generation_mode=GenerationMode.POSITIVE),
        schema.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @given(case=strategy, data=st.data())
    def run(case, data):
        params = case.path_parameters or {}
        if "project" in params:
            destroy_project = case.method == "DELETE" and case.path == "/api/v1/projects/{project}/"
            # The seeded project, except for deleting it (which would end the run early).
            params["project"] = "no-such-project" if destroy_project else project.slug
        if case.query and "cursor" in case.query and data.draw(st.booleans()):
            del case.query["cursor"]  # a made-up cursor is a 404; read the first page too
        for key, values in known.items():
            if key in params and values and data.draw(st.booleans()):
                params[key] = data.draw(st.sampled_from(values))
        try:
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            statuses[response.status_code] += 1
        except FailureGroup as exc:
            statuses[0] += 1
            label = f"{case.method} {case.path}"
            failures.setdefault(label, str(exc)[:1500])

    run()
    print(f"{kind}: {sum(statuses.values())} cases, statuses {sorted(statuses.items())}")
    assert sum(statuses.values()) >= EXAMPLES * 0.9
    # Real objects were reached, not only refusals.
    assert sum(n for code, n in statuses.items() if 200 <= code < 300) >= EXAMPLES * 0.15
    assert not failures, f"{len(failures)} operation(s) failed:\n\n" + "\n\n".join(
        f"== {label}\n{message}" for label, message in sorted(failures.items())
    )

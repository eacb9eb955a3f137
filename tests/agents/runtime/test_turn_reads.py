"""The turn's hand-written reads (``agents.runtime.turn``, ``governance.policies``,
``governance.budgets``) load what the ORM would, and see every change at once."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agents.models import AgentVersion
from agents.runtime.turn import load_version, version_delegates, version_grants
from agents.services import mcp_server_create, tool_set_removed
from governance.budgets import applicable_budgets, budget_create
from governance.models import Policy
from governance.policies import effective_policy, policy_create, policy_version_create
from tests.agents.conftest import mcp_tool
from tests.agents.runtime.conftest import builtin, make_agent, scripted_endpoint
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

SCRIPT = {"responses": [{"text": "done"}]}


@pytest.fixture
def version(project, admin_user):
    scripted_endpoint(project, SCRIPT)
    budget_create(
        project=project, name="agent-cap", scope="agent", period="month", limit_usd=Decimal(5)
    )
    server = mcp_server_create(project=project, name="crm", transport="stdio", command=["srv"])
    builtin(project, "echo")
    mcp_tool(project, server, "crm.lookup", "lookup")
    make_agent(project, admin_user, grants=[], slug="helper")
    make_agent(project, admin_user, grants=[], slug="archivist")
    agent = make_agent(
        project,
        admin_user,
        grants=[{"tool": "echo"}, {"tool": "crm.lookup"}],
        slug="boss",
        delegates=["helper", "archivist"],
        budget="agent-cap",
    )
    return agent.active_version


def test_the_version_loads_with_what_the_orm_would_load(version, django_assert_num_queries):
    with django_assert_num_queries(1):
        loaded = load_version(version.pk)
        # Agent, project, endpoint and budget come with it: no further query.
        assert loaded.agent.project.slug == version.agent.project.slug
        assert loaded.model_endpoint.name == "scripted"
        assert loaded.budget.name == "agent-cap"
    orm = AgentVersion.objects.select_related("agent__project", "model_endpoint", "budget").get(
        pk=version.pk
    )
    for instance, expected in [
        (loaded, orm),
        (loaded.agent, orm.agent),
        (loaded.agent.project, orm.agent.project),
        (loaded.model_endpoint, orm.model_endpoint),
        (loaded.budget, orm.budget),
    ]:
        fields = type(instance)._meta.concrete_fields
        assert [getattr(instance, f.attname) for f in fields] == [
            getattr(expected, f.attname) for f in fields
        ]


def test_a_missing_version_raises_does_not_exist(db):
    with pytest.raises(AgentVersion.DoesNotExist):
        load_version(999_999)


def test_grants_come_with_tools_and_servers_and_skip_removed_tools(
    version, django_assert_num_queries
):
    with django_assert_num_queries(1):
        grants = version_grants(version)
        assert list(grants) == ["crm.lookup", "echo"]
        assert grants["crm.lookup"].tool.mcp_server.name == "crm"
        assert grants["echo"].tool.mcp_server is None
    tool_set_removed(tool=grants["crm.lookup"].tool, removed=True)
    assert list(version_grants(version)) == ["echo"]


def test_delegates_are_the_agents_with_an_active_version(version):
    assert list(version_delegates(version)) == ["archivist", "helper"]
    helper = version_delegates(version)["helper"]
    helper.active_version = None
    helper.save(update_fields=["active_version"])
    assert list(version_delegates(version)) == ["archivist"]


def test_budgets_that_apply(project, version):
    owner = project.memberships.first().user
    outsider = UserFactory()
    budget_create(
        project=project, name="all", scope="project", period="month", limit_usd=Decimal(9)
    )
    budget_create(
        project=project, name="mine", scope="user", period="month", limit_usd=Decimal(1), user=owner
    )
    budget_create(
        project=project,
        name="off",
        scope="project",
        period="month",
        limit_usd=Decimal(1),
        active=False,
    )
    agent_budget = load_version(version.pk).budget

    def names(user, budget):
        return [b.name for b in applicable_budgets(project, user, budget)]

    # In id order: project-scope, the user's own, the agent's; never an inactive one.
    assert names(None, agent_budget) == ["agent-cap", "all"]
    assert names(owner, agent_budget) == ["agent-cap", "all", "mine"]
    assert names(outsider, None) == ["all"]
    assert applicable_budgets(project, owner, None)[0].limit_usd == Decimal(9)


def test_the_policy_in_force_follows_activations_at_once(project, admin_user):
    assert effective_policy(project_id=project.pk).version_id is None
    policy = policy_create(project=project, slug="default")
    assert effective_policy(project_id=project.pk).version_id is None  # no version yet
    first = policy_version_create(policy=policy, document="caps:\n  max_steps_per_run: 5\n")
    snapshot = effective_policy(project_id=project.pk)
    assert (snapshot.version_id, snapshot.label) == (first.pk, "default v1")
    assert snapshot.document.caps.max_steps_per_run == 5
    second = policy_version_create(policy=policy, document="caps:\n  max_steps_per_run: 7\n")
    snapshot = effective_policy(project_id=project.pk)
    assert (snapshot.version_id, snapshot.document.caps.max_steps_per_run) == (second.pk, 7)
    # A version's parsed document is kept: the same object comes back.
    assert effective_policy(project_id=project.pk).document is snapshot.document


def test_a_named_policy_of_another_project_does_not_exist(project, admin_user):
    other = policy_create(project=project, slug="strict")
    assert effective_policy(project_id=project.pk, policy_id=other.pk).version_id is None
    with pytest.raises(Policy.DoesNotExist):
        effective_policy(project_id=project.pk + 1000, policy_id=other.pk)

"""Pause and resume: a turn parks on a call that needs approval, and resumes in another
Python process from the database only (``manage.py agent_run --resume``); edited arguments
are decided again."""

from __future__ import annotations

import json
import subprocess

import pytest
from django.core.management import call_command

from agents.models import AgentTurn
from agents.runtime import ApprovalDecision, Resume, run_agent_turn
from approvals.models import ApprovalRequest
from governance.models import AuditEvent
from tests.procs import ROOT, manage_py, process_env

from .conftest import GRANTS, make_agent, scripted_endpoint

SCRIPT = {
    "responses": [
        {"tool_calls": [{"name": "notify", "arguments": {"text": "big"}}]},
        {"text": "Notified."},
    ]
}


def park(project, admin_user):
    scripted_endpoint(project, SCRIPT)
    agent = make_agent(project, admin_user, grants=GRANTS)
    result = run_agent_turn(agent_version=agent.active_version, input="notify big")
    assert result.status == "parked", result.reason
    return AgentTurn.objects.get(pk=result.turn_id)


def resume_in_another_process(turn, *flags):
    completed = subprocess.run(
        manage_py("agent_run", "--resume", str(turn.pk), "--json", *flags),
        cwd=ROOT,
        env=process_env(LOG_LEVEL="error"),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.django_db(transaction=True)
def test_a_parked_turn_resumes_approved_in_another_process(project, admin_user, runtime_tools):
    turn = park(project, admin_user)
    [pending] = turn.pending
    approval = ApprovalRequest.objects.get(pk=pending["approval_request_id"])
    assert approval.payload["tool"] == "notify"
    assert approval.payload["policy_version_id"] is None  # built-in defaults

    out = resume_in_another_process(turn, "--approve", pending["tool_call_id"])

    assert (out["status"], out["output"]) == ("completed", "Notified."), out
    turn.refresh_from_db()
    assert turn.status == "completed" and turn.pending == []
    recheck = AuditEvent.objects.get(project=project, action="tool.approval.recheck")
    assert recheck.data["matches"] is True
    executed = AuditEvent.objects.get(project=project, action="tool.executed")
    assert executed.data["tool"] == "notify" and executed.data["ok"] is True


@pytest.mark.django_db(transaction=True)
def test_approved_with_edits_decides_the_edited_arguments_again(project, admin_user, runtime_tools):
    turn = park(project, admin_user)
    [pending] = turn.pending
    edited = json.dumps({"text": "forbidden"})

    out = resume_in_another_process(turn, "--edit", f"{pending['tool_call_id']}={edited}")

    assert out["status"] == "completed", out
    recheck = AuditEvent.objects.get(project=project, action="tool.approval.recheck")
    assert recheck.data["matches"] is False
    last = AuditEvent.objects.filter(project=project, action="tool.decision").latest("pk")
    assert (last.data["effect"], last.data["rule"]) == ("deny", "grant.rule.1")
    assert not AuditEvent.objects.filter(project=project, action="tool.executed").exists()


@pytest.mark.django_db
def test_a_denied_call_returns_the_approvers_comment_to_the_model(
    project, admin_user, runtime_tools
):
    turn = park(project, admin_user)
    [pending] = turn.pending
    decisions = {pending["tool_call_id"]: ApprovalDecision(approved=False, comment="not today")}

    result = run_agent_turn(agent_version=None, resume=Resume(turn_id=turn.pk, decisions=decisions))

    assert result.status == "completed"
    turn.refresh_from_db()
    assert "Denied by the approver: not today" in json.dumps(turn.messages)
    assert not AuditEvent.objects.filter(project=project, action="tool.executed").exists()


@pytest.mark.django_db
def test_agent_run_prints_the_transcript_decisions_and_cost(
    project, admin_user, runtime_tools, capsys
):
    scripted_endpoint(
        project,
        {
            "responses": [
                {"tool_calls": [{"name": "echo", "arguments": {"text": "hi"}}]},
                {"text": "Said hi."},
            ]
        },
    )
    make_agent(project, admin_user, grants=GRANTS)

    call_command("agent_run", "helper", "say hi")

    out = capsys.readouterr().out
    assert "completed" in out
    assert "user: say hi" in out
    assert 'model -> echo({"text":"hi"})' in out
    assert "echo: allow (rule grant.effect)" in out
    assert "output: Said hi." in out
    assert "cost: $0.000" in out


@pytest.mark.django_db
def test_a_turn_resumes_once(project, admin_user, runtime_tools):
    turn = park(project, admin_user)
    resume = Resume(turn_id=turn.pk, decisions={})
    assert run_agent_turn(agent_version=None, resume=resume).status == "completed"
    with pytest.raises(ValueError, match="not parked"):
        run_agent_turn(agent_version=None, resume=resume)

"""``manage.py agent_run``: run one governed agent turn (or resume a parked one) and print its
transcript, decisions and cost."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from pydantic_ai.messages import (
    ModelMessagesTypeAdapter,
    ModelRequest,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)

from agents.models import Agent, AgentTurn
from agents.runtime import ApprovalDecision, Resume, TurnResult, run_agent_turn
from controlplane.context import ACTOR_SYSTEM, Actor, acting_as, new_request_id

SYSTEM_ACTOR = Actor(kind=ACTOR_SYSTEM, name="system:agent_run")


def transcript_lines(messages: list[dict[str, Any]]) -> list[str]:
    """The stored conversation (``AgentTurn.messages``) as readable lines."""
    lines = []
    for message in ModelMessagesTypeAdapter.validate_python(messages):
        who = "request" if isinstance(message, ModelRequest) else "model"
        for part in message.parts:
            if isinstance(part, UserPromptPart):
                lines.append(f"user: {part.content}")
            elif isinstance(part, ToolCallPart):
                lines.append(f"model -> {part.tool_name}({part.args_as_json_str()})")
            elif isinstance(part, ToolReturnPart):
                lines.append(f"{part.tool_name} -> {part.model_response_str()}")
            elif isinstance(part, RetryPromptPart):
                lines.append(f"retry ({part.tool_name or 'output'}): {part.model_response()}")
            elif isinstance(part, TextPart):
                lines.append(f"{who}: {part.content}")
    return lines


class Command(BaseCommand):
    help = (
        "Run one agent turn through governance and print the transcript, the decisions "
        "(with the rule that decided each) and the cost. A turn parked for approval prints "
        "its pending calls; resume it with --resume TURN and --approve / --edit / --deny."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("agent", nargs="?", help="agent slug")
        parser.add_argument("input", nargs="?", default="", help="the user input")
        parser.add_argument("--project", help="project slug (needed when the slug is ambiguous)")
        parser.add_argument("--run-id", help="flow run id (per-run caps); default: the turn")
        parser.add_argument("--user", help="username the run acts for")
        parser.add_argument("--resume", type=int, help="id of a parked turn to resume")
        parser.add_argument(
            "--approve", action="append", default=[], metavar="CALL", help="approve a call"
        )
        parser.add_argument(
            "--edit",
            action="append",
            default=[],
            metavar="CALL=JSON",
            help="approve a call with edited arguments (decided again from the start)",
        )
        parser.add_argument(
            "--deny", action="append", default=[], metavar="CALL[=COMMENT]", help="deny a call"
        )
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args, **options) -> None:
        user = None
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"no user {options['user']!r}")
        with acting_as(SYSTEM_ACTOR, request_id=new_request_id()):
            if options["resume"]:
                result = run_agent_turn(
                    agent_version=None,
                    user=user,
                    resume=Resume(turn_id=options["resume"], decisions=self._decisions(options)),
                )
            else:
                result = run_agent_turn(
                    agent_version=self._agent(options).active_version,
                    input=options["input"],
                    run_id=options["run_id"],
                    user=user,
                )
        self._print(result, as_json=options["json"])

    def _agent(self, options) -> Agent:
        if not options["agent"]:
            raise CommandError("give an agent slug and an input, or --resume TURN")
        agents = Agent.objects.filter(slug=options["agent"])
        if options["project"]:
            agents = agents.filter(project__slug=options["project"])
        found = list(agents.select_related("active_version")[:2])
        if not found:
            raise CommandError(f"no agent {options['agent']!r}")
        if len(found) > 1:
            raise CommandError(f"agent {options['agent']!r} exists in several projects: --project")
        if found[0].active_version is None:
            raise CommandError(f"agent {options['agent']!r} has no active version")
        return found[0]

    def _decisions(self, options) -> dict[str, ApprovalDecision]:
        decisions = {call: ApprovalDecision(approved=True) for call in options["approve"]}
        for item in options["edit"]:
            call, _, text = item.partition("=")
            try:
                arguments = json.loads(text)
            except ValueError as exc:
                raise CommandError(f"--edit {call}: the arguments are not JSON ({exc})") from exc
            if not isinstance(arguments, dict):
                raise CommandError(f"--edit {call}: the arguments must be a JSON object")
            decisions[call] = ApprovalDecision(approved=True, arguments=arguments)
        for item in options["deny"]:
            call, _, comment = item.partition("=")
            decisions[call] = ApprovalDecision(approved=False, comment=comment)
        return decisions

    def _print(self, result: TurnResult, *, as_json: bool) -> None:
        turn = AgentTurn.objects.get(pk=result.turn_id)
        decisions = [e for e in result.events if e["event"] in ("tool.decision", "model.refused")]
        if as_json:
            payload = {
                "turn_id": turn.pk,
                "status": result.status,
                "output": result.output,
                "reason": result.reason,
                "rule": result.rule,
                "cost_usd": str(result.cost_usd),
                "pending": turn.pending,
                "approval_request_ids": result.approval_request_ids,
                "events": result.events,
            }
            self.stdout.write(json.dumps(payload, default=str))
            return
        self.stdout.write(f"turn {turn.pk}: {result.status}")
        for line in transcript_lines(turn.messages):
            self.stdout.write(f"  {line}")
        self.stdout.write("decisions:")
        for event in decisions:
            self.stdout.write(
                f"  {event.get('tool', 'model')}: {event.get('effect', 'refused')} "
                f"(rule {event.get('rule')})"
            )
        for entry in turn.pending:
            self.stdout.write(
                f"pending approval {entry['approval_request_id']}: {entry['tool_name']} "
                f"call {entry['tool_call_id']}"
            )
        if result.status == "failed":
            self.stdout.write(f"failed ({result.rule}): {result.reason}")
        else:
            self.stdout.write(f"output: {result.output}")
        self.stdout.write(f"cost: ${result.cost_usd} (this run of the turn)")

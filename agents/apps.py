"""App config for agents; resumes standalone parked turns when their approvals are decided."""

from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Agents"

    def ready(self) -> None:
        from agents.runtime.resume import on_approval_decided
        from governance.approval_port import approval_decided

        approval_decided.connect(on_approval_decided, dispatch_uid="agents.resume_parked_turn")

"""App config for flows; connects the engine to the approval port's decisions and adds the
flow cost dimension, the runs-in-flight dashboard panel and the slowest-steps performance
section (``flows.observability``)."""

from django.apps import AppConfig


class FlowsConfig(AppConfig):
    name = "flows"
    verbose_name = "Flows"

    def ready(self) -> None:
        from governance.approval_port import approval_decided

        approval_decided.connect(_on_approval_decided, dispatch_uid="flows.approval_decided")
        from flows import observability

        observability.register_flow_cost_dimension()
        observability.register_dashboard()
        observability.register_performance()


def _on_approval_decided(sender, *, outcome, payload, project_id, **_kwargs) -> None:
    # Infrastructure hook only: the rule lives in flows.engine.
    from flows.engine import approval_decided

    approval_decided(outcome=outcome, payload=payload or {}, project_id=project_id)

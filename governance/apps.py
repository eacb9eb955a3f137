"""App config for governance; registers the audit recorder, the dashboard's audit, spend and
denials panels, and the metrics receivers."""

from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    name = "governance"
    verbose_name = "Governance"

    def ready(self) -> None:
        from controlplane.audit import register_recorder
        from governance import signals  # noqa: F401 - login/logout audit hooks
        from governance.services import audit_record

        register_recorder(audit_record)
        _register_dashboard()
        from governance.approval_port import approval_decided
        from governance.metrics import observe_approval_decided

        approval_decided.connect(observe_approval_decided, dispatch_uid="governance.metrics")


def _register_dashboard() -> None:
    from datetime import timedelta

    from django.utils import timezone

    from controlplane.extensions import (
        DashboardPanel,
        DashboardStat,
        register_dashboard_panel,
        register_dashboard_stat,
    )
    from governance import dashboard
    from governance.selectors import audit_events_for_projects

    recent_events = 10

    register_dashboard_stat(
        DashboardStat(
            key="costs.today",
            label="Spend today (USD)",
            url_name="cost-report",
            value=lambda project, user, role: f"{dashboard.spend_today_usd(project):.2f}",
            order=40,
        )
    )
    register_dashboard_panel(
        DashboardPanel(
            key="costs.budgets_today",
            template="governance/partials/dashboard_spend.html",
            context=dashboard.spend_panel,
            order=40,
        )
    )
    register_dashboard_panel(
        DashboardPanel(
            key="governance.problems",
            template="governance/partials/dashboard_problems.html",
            context=dashboard.problems_panel,
            order=50,
        )
    )

    register_dashboard_stat(
        DashboardStat(
            key="audit.last_24h",
            label="Audit events, last 24 h",
            url_name="audit-list",
            value=lambda project, user, role: (
                audit_events_for_projects([project.pk])
                .filter(occurred_at__gte=timezone.now() - timedelta(hours=24))
                .count()
            ),
            order=90,
        )
    )
    register_dashboard_panel(
        DashboardPanel(
            key="audit.recent",
            template="governance/partials/dashboard_recent.html",
            context=lambda project, user, role: {
                "recent_events": list(audit_events_for_projects([project.pk])[:recent_events])
            },
            order=90,
        )
    )

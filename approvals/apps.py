"""App config for approvals; contributes the inbox badge and a dashboard number."""

from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = "Approvals"

    def ready(self) -> None:
        from approvals.selectors import approval_outcomes_read, pending_approval_count
        from approvals.services import approval_cancel, approval_request_create
        from controlplane.extensions import (
            DashboardStat,
            register_dashboard_stat,
            register_nav_badge,
        )
        from governance.approval_port import (
            register_approval_canceller,
            register_approval_requester,
            register_outcome_reader,
        )

        register_approval_requester(approval_request_create)
        register_outcome_reader(approval_outcomes_read)
        register_approval_canceller(approval_cancel)
        register_nav_badge("approvals", lambda project: pending_approval_count(project=project))
        register_dashboard_stat(
            DashboardStat(
                key="approvals.pending",
                label="Pending approvals",
                url_name="approvals",
                value=lambda project, user, role: pending_approval_count(project=project),
                order=30,
            )
        )

"""App config for governance; registers the audit recorder for lower layers."""

from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    name = "governance"
    verbose_name = "Governance"

    def ready(self) -> None:
        from controlplane.audit import register_recorder
        from governance import signals  # noqa: F401 - login/logout audit hooks
        from governance.services import audit_record

        register_recorder(audit_record)

"""App config for the project core (tenancy, shell)."""

from django.apps import AppConfig


class ControlplaneConfig(AppConfig):
    name = "controlplane"
    verbose_name = "Control plane"

    def ready(self) -> None:
        from controlplane.api import schema  # noqa: F401 - registers the OpenAPI auth extension

"""Write-once models: rows created by a service and never changed or deleted afterwards.

Used for versioned objects (agent versions and their grants, policy versions) whose
history must stay exactly as it was written.
"""

from __future__ import annotations

from django.db import models


class ImmutableError(Exception):
    """Raised when code tries to change or delete a write-once row."""


class ImmutableQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise ImmutableError(f"{self.model._meta.verbose_name_plural} cannot be changed")

    def delete(self):
        raise ImmutableError(f"{self.model._meta.verbose_name_plural} cannot be deleted")


class ImmutableModel(models.Model):
    """Written once by a service; refuses later saves and deletes (``ImmutableError``)."""

    objects = ImmutableQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ImmutableError(f"{self._meta.verbose_name} cannot be changed")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ImmutableError(f"{self._meta.verbose_name} cannot be deleted")

"""Infrastructure hooks: audit sign-ins, sign-outs and failed sign-ins; the ``budget_alert``
signal for notifications."""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import Signal, receiver

from controlplane.context import ACTOR_SYSTEM, ACTOR_USER, Actor


@receiver(user_logged_in, dispatch_uid="audit_user_logged_in")
def _audit_login(sender, request, user, **_kwargs) -> None:
    from governance.services import audit_record

    actor = Actor(kind=ACTOR_USER, name=user.get_username(), user_id=user.pk, ref=str(user.pk))
    audit_record(action="auth.login", obj=user, actor=actor)


@receiver(user_logged_out, dispatch_uid="audit_user_logged_out")
def _audit_logout(sender, request, user, **_kwargs) -> None:
    from governance.services import audit_record

    if user is None:
        return
    actor = Actor(kind=ACTOR_USER, name=user.get_username(), user_id=user.pk, ref=str(user.pk))
    audit_record(action="auth.logout", obj=user, actor=actor)


@receiver(user_login_failed, dispatch_uid="audit_user_login_failed")
def _audit_login_failed(sender, credentials, request=None, **_kwargs) -> None:
    from governance.services import audit_record

    username = str((credentials or {}).get("username", ""))[:150]
    audit_record(
        action="auth.login_failed",
        actor=Actor(kind=ACTOR_SYSTEM, name="system"),
        data={"username": username},
    )


# Sent once per budget, period and threshold, after the transaction that recorded the
# ``BudgetAlert`` commits (``governance.budgets``). Keyword arguments: ``budget``,
# ``alert`` (the ``BudgetAlert``: ``threshold`` percent, ``spent_usd``, ``limit_usd``,
# ``period_start``) and ``project``. For notifications only: no domain logic in receivers.
budget_alert = Signal()

"""API routes for governance, mounted under /api/v1/projects/<project>/."""

from rest_framework.routers import SimpleRouter

from governance.api.budgets import BudgetReservationViewSet, BudgetViewSet, CostEntryViewSet
from governance.api.history import (
    BudgetAlertViewSet,
    BudgetPeriodViewSet,
    CircuitBreakerViewSet,
    PolicyActivationViewSet,
)
from governance.api.policies import PolicyVersionViewSet, PolicyViewSet
from governance.api.viewsets import AuditEventViewSet, DecisionLogViewSet

router = SimpleRouter()
router.register("audit-events", AuditEventViewSet, basename="audit-event")
router.register("decision-logs", DecisionLogViewSet, basename="decision-log")
router.register("policies", PolicyViewSet, basename="policy")
router.register("budgets", BudgetViewSet, basename="budget")
router.register("budget-reservations", BudgetReservationViewSet, basename="budget-reservation")
router.register("cost-entries", CostEntryViewSet, basename="cost-entry")
router.register("policy-activations", PolicyActivationViewSet, basename="policy-activation")
router.register("budget-periods", BudgetPeriodViewSet, basename="budget-period")
router.register("budget-alerts", BudgetAlertViewSet, basename="budget-alert")
router.register("circuit-breakers", CircuitBreakerViewSet, basename="circuit-breaker")
# Versions nest under their policy (typed path parameters: policy slug, number int).
version_router = SimpleRouter(use_regex_path=False)
version_router.register(
    "policies/<slug:policy>/versions", PolicyVersionViewSet, basename="policy-version"
)
urlpatterns = [*router.urls, *version_router.urls]

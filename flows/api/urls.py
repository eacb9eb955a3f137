"""API routes for flows, mounted under /api/v1/projects/<project>/."""

from rest_framework.routers import SimpleRouter

from flows.api.viewsets import (
    FlowScheduleViewSet,
    FlowVersionViewSet,
    FlowViewSet,
    RunViewSet,
    SpanViewSet,
    StepRunViewSet,
)

router = SimpleRouter()
router.register("flows", FlowViewSet, basename="flow")
router.register("runs", RunViewSet, basename="run")

# Nested routes; path converters give the schema typed parameters.
nested = SimpleRouter(use_regex_path=False)
nested.register("flows/<slug:flow>/versions", FlowVersionViewSet, basename="flow-version")
nested.register("flows/<slug:flow>/schedules", FlowScheduleViewSet, basename="flow-schedule")
nested.register("runs/<int:run>/steps", StepRunViewSet, basename="run-step")
nested.register("runs/<int:run>/spans", SpanViewSet, basename="run-span")

urlpatterns = [*router.urls, *nested.urls]

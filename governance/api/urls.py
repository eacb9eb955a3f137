"""API routes for governance, mounted under /api/v1/projects/<project>/."""

from rest_framework.routers import SimpleRouter

from governance.api.viewsets import AuditEventViewSet

router = SimpleRouter()
router.register("audit-events", AuditEventViewSet, basename="audit-event")
urlpatterns = router.urls

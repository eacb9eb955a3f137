"""API routes of governance outside any project, mounted under /api/v1/."""

from rest_framework.routers import SimpleRouter

from governance.api.global_audit import GlobalAuditEventViewSet

router = SimpleRouter()
router.register("audit-events", GlobalAuditEventViewSet, basename="global-audit-event")

urlpatterns = router.urls

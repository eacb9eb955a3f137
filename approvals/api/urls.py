"""API routes for approvals, mounted under /api/v1/projects/<project>/."""

from rest_framework.routers import SimpleRouter

from approvals.api.viewsets import ApprovalRequestViewSet

router = SimpleRouter()
router.register("approvals", ApprovalRequestViewSet, basename="approval")
urlpatterns = router.urls

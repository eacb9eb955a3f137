"""API routes for approvals, mounted under /api/v1/projects/<project>/."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from approvals.api.viewsets import ApprovalRequestViewSet, ApprovalSettingsViewSet

router = SimpleRouter()
router.register("approvals", ApprovalRequestViewSet, basename="approval")
# One settings object per project: no id in the URL.
settings_view = ApprovalSettingsViewSet.as_view(
    {"get": "retrieve", "put": "update", "patch": "partial_update"}
)
urlpatterns = [
    *router.urls,
    path("approval-settings/", settings_view, name="approval-settings-api"),
]

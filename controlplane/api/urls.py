"""API routes for tenancy."""

from rest_framework.routers import SimpleRouter

from controlplane.api.viewsets import ApiTokenViewSet, MembershipViewSet, ProjectViewSet

router = SimpleRouter()
router.register("projects", ProjectViewSet, basename="project")

project_router = SimpleRouter()
project_router.register("members", MembershipViewSet, basename="membership")
project_router.register("tokens", ApiTokenViewSet, basename="api-token")

urlpatterns = router.urls
project_urlpatterns = project_router.urls

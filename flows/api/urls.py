"""API routes for flows, mounted under /api/v1/projects/<project>/."""

from rest_framework.routers import SimpleRouter

router = SimpleRouter()
urlpatterns = router.urls

"""Root URL configuration: UI pages, the REST API under /api/v1/, admin, health probes."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from controlplane import health
from controlplane.api import urls as controlplane_api

project_api = [
    *controlplane_api.project_urlpatterns,
    path("", include("governance.api.urls")),
    path("", include("agents.api.urls")),
    path("", include("flows.api.urls")),
    path("", include("approvals.api.urls")),
]

api_v1 = [
    *controlplane_api.urlpatterns,
    path("projects/<slug:project>/", include(project_api)),
    path("", include("governance.api.urls_global")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("", include("controlplane.urls_ui")),
    path("", include("governance.urls")),
    path("", include("agents.urls")),
    path("", include("flows.urls")),
    path("", include("approvals.urls")),
]

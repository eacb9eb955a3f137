"""Root URL configuration: UI pages, the REST API under /api/v1/, admin, health probes."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
)

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
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs-v1"),
]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    # The API's documentation: Swagger UI and Redoc (assets from drf-spectacular-sidecar).
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/docs/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("", include("controlplane.urls_ui")),
    path("", include("governance.urls")),
    path("", include("agents.urls")),
    path("", include("flows.urls")),
    path("", include("approvals.urls")),
]

# Under /api/, unrouted URLs and crashes answer JSON like the rest of the API.
handler404 = "controlplane.api.exceptions.not_found"
handler500 = "controlplane.api.exceptions.server_error"

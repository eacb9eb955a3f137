"""UI routes for flows and runs (under the current project), and the inbound webhook."""

from django.urls import path

from flows import views

urlpatterns = [
    path("flows/", views.flow_list, name="flows"),
    path("flows/new/", views.flow_create, name="flow-create"),
    path("flows/new/validate/", views.flow_validate_new, name="flow-validate-new"),
    path("flows/<slug:slug>/", views.flow_detail, name="flow-detail"),
    path("flows/<slug:slug>/validate/", views.flow_validate, name="flow-validate"),
    path("flows/<slug:slug>/versions/", views.flow_version_create, name="flow-version-create"),
    path(
        "flows/<slug:slug>/versions/<int:number>/activate/",
        views.flow_version_activate,
        name="flow-version-activate",
    ),
    path("flows/<slug:slug>/start/", views.flow_run_start, name="flow-run-start"),
    path("flows/<slug:slug>/webhook/", views.flow_webhook_rotate, name="flow-webhook-rotate"),
    path(
        "flows/<slug:slug>/webhook/disable/",
        views.flow_webhook_disable,
        name="flow-webhook-disable",
    ),
    path("flows/<slug:slug>/schedules/", views.flow_schedule_create, name="flow-schedule-create"),
    path(
        "flows/<slug:slug>/schedules/<int:pk>/toggle/",
        views.flow_schedule_toggle,
        name="flow-schedule-toggle",
    ),
    path("runs/", views.run_list, name="runs"),
    path("runs/<int:pk>/", views.run_detail, name="run-detail"),
    path("runs/<int:pk>/live/", views.run_live, name="run-live"),
    path("runs/<int:pk>/cancel/", views.run_cancel, name="run-cancel"),
    path("runs/<int:pk>/retry/", views.run_retry, name="run-retry"),
    # Inbound webhook: no session, no CSRF; the token authenticates.
    path("hooks/flows/<str:flow_ref>", views.flow_webhook, name="flow-webhook"),
    path("hooks/flows/<str:flow_ref>/<str:token>", views.flow_webhook, name="flow-webhook-token"),
]

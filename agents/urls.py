"""UI routes of the agent registry (all under the current project).

Fixed paths come before ``agents/<slug>/`` and ``tools/<name>/``; the forms refuse agent
slugs and tool names that would collide with them (``agents.models.RESERVED_*``).
"""

from django.urls import path

from agents import views, views_replay

urlpatterns = [
    path("agents/", views.agent_list, name="agents"),
    path("agents/new/", views.agent_create, name="agent-create"),
    path("agents/model-endpoints/", views.model_endpoint_list, name="model-endpoints"),
    path(
        "agents/model-endpoints/<int:pk>/test/",
        views.model_endpoint_test,
        name="model-endpoint-test",
    ),
    path("agents/<slug:slug>/", views.agent_detail, name="agent-detail"),
    path("agents/<slug:slug>/edit/", views.agent_edit, name="agent-edit"),
    path("agents/<slug:slug>/diff/", views.agent_diff, name="agent-diff"),
    path("agents/<slug:slug>/dry-run/", views.agent_dry_run, name="agent-dry-run"),
    path(
        "agents/<slug:slug>/versions/<int:number>/activate/",
        views.agent_version_activate,
        name="agent-version-activate",
    ),
    path("replays/", views_replay.replay_list, name="replays"),
    path("replays/<int:pk>/", views_replay.replay_detail, name="replay-detail"),
    path("tools/", views.tool_list, name="tools"),
    path("tools/new/", views.tool_create, name="tool-create"),
    path("tools/mcp-servers/", views.mcp_server_list, name="mcp-servers"),
    path("tools/mcp-servers/<int:pk>/sync/", views.mcp_server_sync, name="mcp-server-sync"),
    path("tools/outbox/", views.demo_outbox, name="demo-outbox"),
    # Tool names contain dots ("payments.send"); ``str`` matches anything but "/".
    path("tools/<str:name>/", views.tool_detail, name="tool-detail"),
]

"""API routes for the agent registry, mounted under /api/v1/projects/<project>/."""

from rest_framework.routers import SimpleRouter

from agents.api.history import AgentActivationViewSet, AgentTurnViewSet
from agents.api.replay import ReplayJobViewSet
from agents.api.viewsets import (
    AgentVersionViewSet,
    AgentViewSet,
    MCPServerViewSet,
    ModelEndpointViewSet,
    ToolViewSet,
)

router = SimpleRouter()
router.register("model-endpoints", ModelEndpointViewSet, basename="model-endpoint")
router.register("mcp-servers", MCPServerViewSet, basename="mcp-server")
router.register("tools", ToolViewSet, basename="tool")
router.register("agents", AgentViewSet, basename="agent")
router.register("agent-turns", AgentTurnViewSet, basename="agent-turn")
router.register("agent-activations", AgentActivationViewSet, basename="agent-activation")
router.register("replays", ReplayJobViewSet, basename="replay")

# Versions nest under their agent; path converters give the schema typed parameters
# (agent: slug, number: int).
version_router = SimpleRouter(use_regex_path=False)
version_router.register(
    "agents/<slug:agent>/versions", AgentVersionViewSet, basename="agent-version"
)

urlpatterns = [*router.urls, *version_router.urls]

"""The agent registry (agents, versions, model endpoints, tools, MCP servers, tool grants) and the agent runtime."""

"""Models of the tools app: MCP servers, the MCP client layer and the tool catalog.

Filled in by the issue that builds this app.
"""

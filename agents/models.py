"""Models of the agents app: Agents, their hierarchy, approvals and tool grants.

Filled in by the issue that builds this app.
"""

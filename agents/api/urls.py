"""REST endpoints of the agents app: agents, grants, approvals."""

urlpatterns: list = []

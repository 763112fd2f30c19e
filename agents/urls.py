"""Console URLs of the agents app (``agents:<model>_<action>``)."""

app_name = "agents"

urlpatterns: list = []

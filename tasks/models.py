"""Models of the tasks app: Tasks and their executions.

Filled in by the issue that builds this app.
"""

"""Models of the recordings app: The flight recorder: runs and recorded tool calls.

Filled in by the issue that builds this app.
"""

"""Argus: control plane and flight recorder for AI agents working through MCP servers."""

from argus.celery import app as celery_app

__all__ = ["celery_app"]

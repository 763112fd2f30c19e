"""Fixtures of the tools tests."""

import pytest

from tools.mcp.pool import get_pool


@pytest.fixture(autouse=True)
def fresh_session_pool():
    """Database ids are reused after a test's rollback, so a session pooled for server
    1 in one test must not serve server 1 of the next: close them all after each test."""
    yield
    get_pool().close_all()

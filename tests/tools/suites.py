"""Permission suites of the tools models (see tests/support/permission_suite.py)."""

import itertools
import sys

from tests.support.permission_suite import MANAGER_UP, OPERATOR_UP, PermissionSuite, register
from tests.tools.factories import make_server, make_tool
from tools.models import MCPServer, Tool

_serial = itertools.count(1)

register(
    PermissionSuite(
        model=MCPServer,
        make=lambda personas, organization: make_server(organization),
        rights={"operate": OPERATOR_UP, "change": MANAGER_UP},
        api="/api/v1/servers/",
        create_payload=lambda personas: {
            "name": f"created {next(_serial)}",
            "transport": "stdio",
            "command": sys.executable,
            "args": ["-m", "tools.demo_server"],
        },
        update_payload=lambda personas, obj: {"description": "changed"},
        api_delete=True,
        console_urls=[
            ("tools:server_detail", "get"),
            ("tools:server_edit", "get"),
            ("tools:server_edit", "post"),
            ("tools:server_test_config", "post"),
            ("tools:server_delete", "get"),
            ("tools:server_delete", "post"),
            ("tools:server_test", "post"),
            ("tools:server_sync", "post"),
            ("tools:server_maintenance", "post"),
            ("tools:server_access", "get"),
            ("tools:server_access", "post"),
        ],
    )
)

register(
    PermissionSuite(
        model=Tool,
        make=lambda personas, organization: make_tool(make_server(organization)),
        rights={"operate": OPERATOR_UP, "change": MANAGER_UP},
        api="/api/v1/tools/",
        console_urls=[
            ("tools:tool_detail", "get"),
            ("tools:tool_try", "post"),
            ("tools:tool_accept", "post"),
        ],
    )
)

"""What it takes to open a session to one server, resolved from its configuration.

A :class:`ConnectionSpec` is built in the process that opens the session, with the
server's secrets decrypted and substituted into ``env`` and ``headers`` there; it is
never stored or logged (its ``repr`` hides values).
"""

import os
import re
from dataclasses import dataclass, field

SECRET_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# What a stdio child gets from Argus's own environment besides what its configuration
# declares: enough to find and start a program, nothing that could hold a secret.
INHERITED_VARIABLES = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "TMPDIR")


class UnknownSecret(ValueError):
    """A ``${NAME}`` reference names no secret of the server."""

    def __init__(self, name: str, where: str):
        super().__init__(f"{where} refers to ${{{name}}}, but the server has no secret {name}")
        self.name = name
        self.where = where


def references(value: str) -> set[str]:
    """The secret names ``value`` refers to as ``${NAME}``."""
    return set(SECRET_REFERENCE.findall(value))


def substitute(value: str, secrets: dict[str, str], where: str) -> str:
    """``value`` with each ``${NAME}`` replaced by that secret; raises UnknownSecret."""

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in secrets:
            raise UnknownSecret(name, where)
        return secrets[name]

    return SECRET_REFERENCE.sub(replace, value)


def child_environment(declared: dict[str, str]) -> dict[str, str]:
    """The whole environment of a stdio server: the inherited basics, then what the
    configuration declares (which wins)."""
    base = {name: os.environ[name] for name in INHERITED_VARIABLES if name in os.environ}
    return base | declared


@dataclass(frozen=True)
class ConnectionSpec:
    """Everything needed to open a session to one server at one configuration version."""

    server_id: int
    config_version: int
    name: str
    transport: str
    timeout_s: float
    command: str = ""
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict, repr=False)
    cwd: str = ""
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    # The decrypted secret values, only to take them out of error messages.
    secret_values: tuple[str, ...] = field(default=(), repr=False)

    @property
    def key(self) -> tuple[int, int]:
        return (self.server_id, self.config_version)

    def redact(self, text: str) -> str:
        """``text`` without any secret value (as is, or escaped the way an exception
        quotes it), and without NUL characters."""
        text = text.replace("\x00", "")
        for value in sorted(self.secret_values, key=len, reverse=True):
            for form in {value, repr(value)[1:-1], repr(value.encode())[2:-1]}:
                if len(form) >= 3:
                    text = text.replace(form, "[secret]")
        return text

    def __hash__(self):
        return hash(self.key)


def spec_for(server) -> ConnectionSpec:
    """The connection spec of an ``MCPServer``, secrets resolved.

    Raises :class:`UnknownSecret` when ``env`` or ``headers`` refer to a missing secret.
    """
    secrets = server.decrypted_secrets()
    env = {
        str(name): substitute(str(value), secrets, f"environment variable {name}")
        for name, value in (server.env or {}).items()
    }
    headers = {
        str(name): substitute(str(value), secrets, f"header {name}")
        for name, value in (server.headers or {}).items()
    }
    return ConnectionSpec(
        server_id=server.pk,
        config_version=server.config_version,
        name=server.name,
        transport=server.transport,
        timeout_s=float(server.timeout_s),
        command=server.command,
        args=tuple(str(arg) for arg in server.args or ()),
        env=env,
        cwd=server.cwd,
        url=server.url,
        headers=headers,
        secret_values=tuple(secrets.values()),
    )

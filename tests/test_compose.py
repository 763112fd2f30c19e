"""Static checks of compose.yaml and the Dockerfile; no Docker engine needed.

Every ``argus …`` command they run is parsed with that management command's own
parser, so a renamed command or flag fails here rather than in a container.
"""

import json
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from django.core.management import CommandError, get_commands, load_command_class

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"

ARGUS_SERVICES = ("migrate", "web", "worker", "beat")
LONG_RUNNING = ("postgres", "redis", "web", "worker", "beat")
SHELL_OPERATORS = {"&&", "||", ";", "|", "&"}
# ${NAME}, ${NAME:?message} or ${NAME?message}: a value that must come from outside.
REQUIRED_VARIABLE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}")
ANY_VARIABLE = re.compile(r"\$\{[^}]*\}")
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


# --- helpers --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose.get("services") or {}


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell script, split at ``&&``, ``||``, ``;``, ``|``."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, current = [], []
    for token in lexer:
        if token in SHELL_OPERATORS:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    return [strip_assignments(command) for command in commands if command]


def strip_assignments(argv: list[str]) -> list[str]:
    """Drop leading ``NAME=value`` words (environment for that one command)."""
    while argv and ASSIGNMENT.match(argv[0]):
        argv = argv[1:]
    return argv


def service_commands(name: str, service: dict) -> list[tuple[str, list[str]]]:
    """(where, argv) for the service's command and each command of its healthcheck."""
    found = []
    command = service.get("command")
    if isinstance(command, str):
        found.append((f"service {name!r} command", shlex.split(command)))
    elif command:
        found.append((f"service {name!r} command", [str(word) for word in command]))
    test = (service.get("healthcheck") or {}).get("test")
    where = f"service {name!r} healthcheck"
    if isinstance(test, str):
        found += [(where, argv) for argv in shell_commands(test)]
    elif test and test[0] == "CMD":
        found.append((where, [str(word) for word in test[1:]]))
    elif test and test[0] == "CMD-SHELL":
        found += [(where, argv) for argv in shell_commands(test[1])]
    return found


def argus_problem(argv: list[str]) -> str | None:
    """Why ``argus <command> <args>`` would not start, or None when it parses."""
    if len(argv) < 2:
        return "no management command given"
    name, args = argv[1], argv[2:]
    commands = get_commands()
    if name not in commands:
        return f"{name!r} is not a management command"
    command = load_command_class(commands[name], name)
    parser = command.create_parser("argus", name)
    parser.allow_abbrev = False  # spell flags out: an abbreviation breaks when a flag is added
    try:
        options = parser.parse_args(args)
    except (SystemExit, CommandError) as exc:
        return f"`argus {name}` rejects its arguments {args!r} ({exc})"
    if name == "health":
        from argus.health import COMPONENTS

        unknown = [c for c in options.components if c not in COMPONENTS]
        if unknown:
            return f"unknown health component(s) {unknown!r}; choose from {COMPONENTS!r}"
    return None


def command_problems(where: str, argv: list[str]) -> list[str]:
    """Problems with one command: an ``argus`` command that would not parse, or a
    ``python -c`` snippet that does not compile."""
    shown = shlex.join(argv)
    if argv and argv[0] == "argus":
        problem = argus_problem(argv)
        return [f"{where}: `{shown}`: {problem}"] if problem else []
    if len(argv) >= 3 and argv[0] in {"python", "python3"} and argv[1] == "-c":
        try:
            compile(argv[2], "<compose>", "exec")
        except SyntaxError as exc:
            return [f"{where}: python -c snippet does not compile: {exc}"]
    return []


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def named_volume(entry) -> str | None:
    """The named volume a service's volume entry mounts (None for bind mounts)."""
    if isinstance(entry, dict):
        source = entry.get("source") if entry.get("type", "volume") == "volume" else None
    else:
        source = entry.split(":", 1)[0] if ":" in entry else None
    if not source or source.startswith(("/", ".", "~", "$")):
        return None
    return source


def dockerfile_instructions() -> list[tuple[int, str, str]]:
    """(line number, INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    assert DOCKERFILE.is_file(), f"{DOCKERFILE} is missing"
    instructions, parts, start = [], [], 0
    for number, line in enumerate(DOCKERFILE.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("#") or (not line.strip() and not parts):
            continue
        if not parts:
            start = number
        parts.append(line.rstrip().removesuffix("\\"))
        if not line.rstrip().endswith("\\"):
            keyword, _, rest = " ".join(parts).strip().partition(" ")
            instructions.append((start, keyword.upper(), rest.strip()))
            parts = []
    return instructions


# --- compose: services, health, ordering -----------------------------------------------
def test_compose_has_every_service(services):
    missing = [name for name in ("postgres", "redis", *ARGUS_SERVICES) if name not in services]
    assert not missing, f"compose.yaml lacks the service(s) {missing}"
    assert str(services["postgres"].get("image", "")).startswith("postgres:16"), (
        f"postgres must run postgres:16, not {services['postgres'].get('image')!r}"
    )
    assert str(services["redis"].get("image", "")).startswith("redis:7"), (
        f"redis must run redis:7, not {services['redis'].get('image')!r}"
    )


def test_long_running_services_have_healthchecks_and_restart(services):
    problems = []
    for name in LONG_RUNNING:
        service = services.get(name, {})
        test = (service.get("healthcheck") or {}).get("test")
        if not test or test == ["NONE"] or (service.get("healthcheck") or {}).get("disable"):
            problems.append(f"service {name!r} has no healthcheck")
        if service.get("restart") != "unless-stopped":
            problems.append(
                f"service {name!r} has restart {service.get('restart')!r}, "
                "expected 'unless-stopped'"
            )
    for name in ARGUS_SERVICES:
        if services.get(name, {}).get("init") is not True:
            problems.append(f"service {name!r} needs `init: true` for signal handling")
    assert not problems, "\n".join(problems)


def test_migrate_runs_once_before_the_argus_processes(services):
    problems = []
    migrate = services.get("migrate", {})
    if migrate.get("restart", "no") not in ("no", False):
        problems.append(f"migrate is one-shot: restart must be 'no', not {migrate['restart']!r}")
    for name, condition in (
        ("migrate", {"postgres": "service_healthy", "redis": "service_healthy"}),
        ("web", {"migrate": "service_completed_successfully"}),
        ("worker", {"migrate": "service_completed_successfully"}),
        ("beat", {"migrate": "service_completed_successfully"}),
    ):
        depends_on = services.get(name, {}).get("depends_on") or {}
        for dependency, wanted in condition.items():
            actual = depends_on.get(dependency, {}) if isinstance(depends_on, dict) else {}
            if (actual or {}).get("condition") != wanted:
                problems.append(
                    f"service {name!r} must depend on {dependency!r} with "
                    f"condition: {wanted} (has {actual or depends_on!r})"
                )
    assert not problems, "\n".join(problems)


def test_declared_volumes_are_used_and_used_volumes_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    used = {
        volume: name
        for name, service in services.items()
        for volume in map(named_volume, service.get("volumes") or [])
        if volume
    }
    unused = sorted(declared - set(used))
    undeclared = sorted(f"{volume!r} (service {used[volume]!r})" for volume in set(used) - declared)
    assert not unused, f"volumes declared but mounted by no service: {unused}"
    assert not undeclared, f"named volumes mounted but not declared: {undeclared}"


# --- compose: commands -------------------------------------------------------------------
def test_compose_commands_parse(services):
    problems, checked = [], []
    for name, service in services.items():
        for where, argv in service_commands(name, service):
            checked.append(argv)
            problems += command_problems(where, argv)
    assert not problems, "\n".join(problems)
    assert any(argv[:1] == ["argus"] for argv in checked), "no argus command found in compose"


def test_compose_python_snippets_compile(services):
    snippets = [
        (where, argv[2])
        for name, service in services.items()
        for where, argv in service_commands(name, service)
        if argv[:2] in (["python", "-c"], ["python3", "-c"]) and len(argv) > 2
    ]
    assert snippets, "expected the web healthcheck to probe HTTP with python -c"
    for where, source in snippets:
        try:
            compile(source, "<compose>", "exec")
        except SyntaxError as exc:
            pytest.fail(f"{where}: python -c snippet does not compile: {exc}")


def test_argus_processes_run_the_right_commands(services):
    expected = {"migrate": "migrate", "web": "web", "worker": "worker", "beat": "beat"}
    for name, command in expected.items():
        argv = service_commands(name, services[name])[0][1]
        assert argv[:2] == ["argus", command], (
            f"service {name!r} should run `argus {command}`, runs `{shlex.join(argv)}`"
        )


def test_problems_are_reported():
    """The checker itself catches a wrong flag, an unknown command and bad Python."""
    assert "rejects its arguments" in argus_problem(["argus", "web", "--bogus"])
    assert "not a management command" in argus_problem(["argus", "webb"])
    assert "unknown health component" in argus_problem(["argus", "health", "wrker"])
    assert "rejects its arguments" in argus_problem(["argus", "web", "--proxy-header"])
    assert argus_problem(["argus", "health", "worker"]) is None
    assert command_problems("x", ["python", "-c", "import ("])
    assert shell_commands("A=1 argus health db && python -c 'x | y' || true") == [
        ["argus", "health", "db"],
        ["python", "-c", "x | y"],
        ["true"],
    ]


# --- compose: configuration and secrets --------------------------------------------------
def test_argus_services_reach_postgres_and_redis(services):
    problems = []
    for name in ARGUS_SERVICES:
        env = environment(services.get(name, {}))
        for variable, schemes, host in (
            ("DATABASE_URL", {"postgres", "postgresql"}, "postgres"),
            ("REDIS_URL", {"redis"}, "redis"),
        ):
            if variable not in env:
                problems.append(f"service {name!r} does not set {variable}")
                continue
            # Interpolations may hold any text; parse the URL with placeholders.
            url = urlsplit(ANY_VARIABLE.sub("placeholder", env[variable]))
            if url.scheme not in schemes or url.hostname != host:
                problems.append(
                    f"service {name!r}: {variable}={env[variable]!r} should be "
                    f"{sorted(schemes)[0]}://…@{host}:…, pointing at the {host!r} service"
                )
    assert not problems, "\n".join(problems)


def test_no_literal_secrets_in_compose(services):
    problems = []

    def check(where: str, value: str) -> None:
        if not REQUIRED_VARIABLE.fullmatch(value):
            problems.append(
                f"{where} is {value!r}: a secret must be a required interpolation such as "
                "${NAME:?message}, not a literal or a default"
            )

    for name, service in services.items():
        env = environment(service)
        for secret in ("SECRET_KEY", "ARGUS_ENCRYPTION_KEY", "POSTGRES_PASSWORD"):
            if secret in env:
                check(f"service {name!r}: {secret}", env[secret])
        for secret in ("SECRET_KEY", "ARGUS_ENCRYPTION_KEY"):
            if name in ARGUS_SERVICES and secret not in env and f"{secret}_FILE" not in env:
                problems.append(f"service {name!r} sets neither {secret} nor {secret}_FILE")
        for variable in ("DATABASE_URL", "REDIS_URL", "EMAIL_URL"):
            # A password inside a URL: `scheme://user:${PASSWORD:?…}@host`.
            match = re.match(r"[a-z+]+://[^:/@]*:(.*)@[^@]*$", env.get(variable, ""))
            if match:
                check(f"service {name!r}: the password in {variable}", match.group(1))
    assert not problems, "\n".join(problems)


# --- Dockerfile ------------------------------------------------------------------------------
def test_dockerfile_base_image():
    bases = [
        next(word for word in rest.split() if not word.startswith("--"))
        for _line, keyword, rest in dockerfile_instructions()
        if keyword == "FROM"
    ]
    assert bases, "the Dockerfile has no FROM line"
    assert all(base.startswith("python:3.11") for base in bases), (
        f"the Dockerfile must build on python:3.11*, found {bases}"
    )


def test_dockerfile_commands_parse():
    problems, argus_commands = [], []
    for line, keyword, rest in dockerfile_instructions():
        if keyword not in {"RUN", "CMD", "ENTRYPOINT"}:
            continue
        where = f"Dockerfile line {line} ({keyword})"
        if rest.startswith("["):
            commands = [strip_assignments(json.loads(rest))]
        else:
            commands = shell_commands(rest)
        for argv in commands:
            if argv[:1] == ["argus"]:
                argus_commands.append(argv[1:2])
            problems += command_problems(where, argv)
    assert not problems, "\n".join(problems)
    assert ["collectstatic"] in argus_commands, "the Dockerfile should run argus collectstatic"


def test_dockerfile_runs_as_argus():
    users = [rest for _line, keyword, rest in dockerfile_instructions() if keyword == "USER"]
    assert users and users[-1] == "argus", f"the image must run as user argus, not {users}"

"""Strict readers for settings taken from the environment.

Every reader names the variable in its error, so a bad value stops start-up with a
message that says what to fix. Secrets can be given as ``NAME_FILE`` pointing at a
file holding the value (Docker/Kubernetes secrets); giving both is an error.
"""

import os
import re
import secrets
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


class SettingError(ImproperlyConfigured):
    """A variable of the environment holds a value Argus cannot use."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name


def read_raw(name: str, *, secret: bool = False) -> str | None:
    """Return the variable's value, or ``None`` when it is unset or empty.

    With ``secret=True`` the value may also come from the file named by ``NAME_FILE``.
    """
    value = os.environ.get(name)
    if secret:
        file_name = os.environ.get(f"{name}_FILE")
        if file_name:
            if value:
                raise SettingError(name, f"set either {name} or {name}_FILE, not both")
            try:
                value = Path(file_name).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SettingError(
                    f"{name}_FILE", f"cannot read {file_name!r}: {exc.strerror}"
                ) from exc
            if not value:
                raise SettingError(f"{name}_FILE", f"{file_name!r} is empty")
    if value is None or value.strip() == "":
        return None
    return value.strip()


def read_str(name: str, default: str | None = None, *, secret: bool = False) -> str | None:
    """The value, or ``default`` when unset or empty."""
    value = read_raw(name, secret=secret)
    return default if value is None else value


def read_bool(name: str, default: bool) -> bool:
    """true/false, 1/0, yes/no or on/off (any case)."""
    value = read_raw(name)
    if value is None:
        return default
    word = value.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise SettingError(name, f"expected a boolean (true/false, 1/0, yes/no, on/off), got {value!r}")


def read_int(name: str, default: int, *, minimum: int | None = None) -> int:
    """A whole number, at least ``minimum`` when given."""
    value = read_raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise SettingError(name, f"expected an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise SettingError(name, f"must be at least {minimum}, got {number}")
    return number


def read_list(name: str, default: list[str]) -> list[str]:
    """A comma-separated list; blanks around items are ignored, empty items refused."""
    value = read_raw(name)
    if value is None:
        return list(default)
    items = [item.strip() for item in value.split(",")]
    if any(not item for item in items):
        raise SettingError(name, f"empty item in comma-separated list {value!r}")
    return items


def read_choice(name: str, default: str, choices: set[str]) -> str:
    """One of ``choices``, spelled exactly."""
    value = read_raw(name)
    if value is None:
        return default
    if value not in choices:
        allowed = ", ".join(sorted(choices))
        raise SettingError(name, f"expected one of {allowed}, got {value!r}")
    return value


RATE = re.compile(r"^[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)$")


def read_rate(name: str, default: str) -> str:
    """A request rate such as ``600/min`` (per s, min, hour or day), as DRF reads it."""
    value = read_str(name, default)
    if not RATE.match(value):
        raise SettingError(name, f"expected a rate like 600/min or 10/s, got {value!r}")
    return value


def read_base_url(name: str, default: str) -> str:
    """An absolute http(s) URL without query or fragment, such as ``https://argus.example.com``."""
    value = read_str(name, default)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise SettingError(
            name, f"expected an http(s) URL like https://argus.example.com, got {value!r}"
        )
    return value.rstrip("/")


def read_origins(name: str) -> list[str]:
    """A list of origins such as ``https://argus.example.com``, as Django's CSRF check wants."""
    origins = read_list(name, [])
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.path not in {"", "/"}:
            raise SettingError(name, f"{origin!r} is not an origin (expected scheme://host[:port])")
    return origins


def read_timezone(name: str, default: str) -> str:
    """An IANA time zone name known to this system."""
    import zoneinfo

    value = read_str(name, default)
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise SettingError(name, f"unknown time zone {value!r}") from None
    return value


def read_redis_url(name: str) -> str | None:
    """A ``redis://``, ``rediss://`` or ``unix://`` URL with a valid host and port."""
    value = read_raw(name, secret=True)
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise SettingError(name, f"expected a redis://, rediss:// or unix:// URL, got {value!r}")
    if parts.scheme != "unix" and not parts.hostname:
        raise SettingError(name, f"no host in {value!r}")
    try:
        parts.port  # noqa: B018 - urlsplit validates the port lazily
    except ValueError:
        raise SettingError(name, f"bad port in {value!r}") from None
    return value


def read_database(name: str, default_sqlite: Path) -> dict:
    """``DATABASE_URL`` as a Django DATABASES entry; SQLite under the data dir by default."""
    import dj_database_url

    value = read_raw(name, secret=True)
    if value is None:
        config = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(default_sqlite)}
    else:
        scheme = urlsplit(value).scheme
        if scheme not in {"postgres", "postgresql", "pgsql", "sqlite"}:
            raise SettingError(
                name, f"unsupported scheme {scheme!r}: use postgres://… or sqlite:///path"
            )
        try:
            config = dj_database_url.parse(value, conn_max_age=0)
        except ValueError as exc:
            raise SettingError(name, str(exc)) from None
        if config["ENGINE"] != "django.db.backends.sqlite3" and not config.get("NAME"):
            raise SettingError(name, f"no database name in {value!r}")
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # WAL lets readers run beside one writer; IMMEDIATE takes the write lock at
        # BEGIN so two writers queue on the busy timeout (`timeout`, in seconds)
        # instead of deadlocking.
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    return config


def read_email(name: str, default: str) -> dict:
    """``EMAIL_URL`` as Django email settings.

    ``smtp://user:pass@host:587`` (STARTTLS with ``smtp+tls``, implicit TLS with
    ``smtp+ssl`` or ``smtps``), ``console://`` or ``locmem://``.
    """
    value = read_str(name, default, secret=True)
    parts = urlsplit(value)
    backends = {
        "console": "django.core.mail.backends.console.EmailBackend",
        "locmem": "django.core.mail.backends.locmem.EmailBackend",
        "smtp": "django.core.mail.backends.smtp.EmailBackend",
        "smtp+tls": "django.core.mail.backends.smtp.EmailBackend",
        "smtp+ssl": "django.core.mail.backends.smtp.EmailBackend",
        "smtps": "django.core.mail.backends.smtp.EmailBackend",
    }
    if parts.scheme not in backends:
        allowed = ", ".join(f"{scheme}://" for scheme in backends)
        raise SettingError(name, f"unsupported scheme {parts.scheme!r}: use one of {allowed}")
    email = {"EMAIL_BACKEND": backends[parts.scheme]}
    if parts.scheme.startswith("smtp"):
        if not parts.hostname:
            raise SettingError(name, f"no host in {value!r}")
        try:
            port = parts.port
        except ValueError:
            raise SettingError(name, "bad port") from None
        implicit_tls = parts.scheme in {"smtp+ssl", "smtps"}
        email.update(
            EMAIL_HOST=parts.hostname,
            EMAIL_PORT=port or (465 if implicit_tls else 587 if parts.scheme == "smtp+tls" else 25),
            EMAIL_HOST_USER=unquote(parts.username or ""),
            EMAIL_HOST_PASSWORD=unquote(parts.password or ""),
            EMAIL_USE_TLS=parts.scheme == "smtp+tls",
            EMAIL_USE_SSL=implicit_tls,
        )
        query = parse_qs(parts.query)
        if "timeout" in query:
            try:
                email["EMAIL_TIMEOUT"] = int(query["timeout"][0])
            except ValueError:
                raise SettingError(name, "timeout must be an integer number of seconds") from None
    return email


def read_or_generate_secret(name: str, store: Path, *, generate: bool, length: int = 50) -> str:
    """The secret from the environment, or one generated once and kept in ``store``.

    ``generate=False`` (production) makes the variable mandatory.
    """
    value = read_raw(name, secret=True)
    if value is not None:
        return value
    if not generate:
        raise SettingError(
            name,
            f"is required in production (or set {name}_FILE); generate one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(50))'",
        )
    if store.exists():
        return store.read_text(encoding="utf-8").strip()
    store.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    value = secrets.token_urlsafe(length)
    # Write-then-rename with O_EXCL semantics so two processes starting at once agree.
    tmp = store.with_name(f".{store.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value)
    try:
        os.link(tmp, store)
    except FileExistsError:
        value = store.read_text(encoding="utf-8").strip()
    finally:
        tmp.unlink()
    return value

"""Settings from the environment: strict parsing, *_FILE secrets, production checks."""

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from argus import env
from tests.support.processes import ROOT

SETTINGS = ROOT / "argus" / "settings.py"
PRODUCTION = {
    "DATABASE_URL": "postgres://argus:pw@db.internal:5432/argus",
    "REDIS_URL": "redis://cache.internal:6379/0",
    "SECRET_KEY": "k" * 20 + "-production-secret-key-for-tests-only-0123456789",
    "ARGUS_ENCRYPTION_KEY": "dGVzdC1lbmNyeXB0aW9uLWtleS0zMi1ieXRlcy0hISE",
    "ALLOWED_HOSTS": "argus.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://argus.example.com",
}
NAMES = [
    "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "SECRET_KEY_FILE", "ARGUS_ENCRYPTION_KEY",
    "ARGUS_ENCRYPTION_KEY_FILE", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "DEBUG", "EMAIL_URL",
    "TIME_ZONE", "ARGUS_SECURE", "ARGUS_STATIC_ROOT", "ARGUS_DATA_DIR",
    "ARGUS_ENCRYPTION_KEY_FALLBACKS", "ARGUS_ENCRYPTION_KEY_FALLBACKS_FILE",
    "ARGUS_ALLOW_STDIO", "ARGUS_ALLOW_PRIVATE_NETWORKS",
]  # fmt: skip


@pytest.fixture
def environment(monkeypatch, tmp_path):
    """A clean environment with a fresh data dir; returns a setter."""
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ARGUS_DATA_DIR", str(tmp_path / "data"))

    def set_env(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


def load_settings() -> dict:
    return runpy.run_path(str(SETTINGS))


def test_embedded_defaults(environment, tmp_path):
    settings = load_settings()
    assert settings["EMBEDDED"] is True
    db = settings["DATABASES"]["default"]
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == str(tmp_path / "data" / "argus.sqlite3")
    assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in db["OPTIONS"]["init_command"]
    assert settings["REDIS_URL"].startswith("unix://")
    assert settings["CELERY_BROKER_URL"].startswith("redis+socket://")
    assert oct((tmp_path / "data").stat().st_mode & 0o777) == "0o700"
    # Secrets are generated once and kept.
    key_file = tmp_path / "data" / "secrets" / "secret_key"
    assert key_file.read_text() == settings["SECRET_KEY"]
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert load_settings()["SECRET_KEY"] == settings["SECRET_KEY"]
    assert load_settings()["ARGUS_ENCRYPTION_KEY"] == settings["ARGUS_ENCRYPTION_KEY"]
    # Mail goes to the console, so verification would lock people out; invitations only.
    assert settings["ACCOUNT_EMAIL_VERIFICATION"] == "none"
    assert settings["ARGUS_SIGNUP"] == "invite"
    assert settings["ARGUS_PUBLIC_URL"] == "http://localhost:8000"


def test_production_values(environment):
    environment(**PRODUCTION, EMAIL_URL="smtp+tls://mailer:p%40ss@smtp.example.com:2525")
    settings = load_settings()
    assert settings["EMBEDDED"] is False
    db = settings["DATABASES"]["default"]
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["HOST"], db["PORT"]) == ("argus", "db.internal", 5432)
    assert settings["CELERY_BROKER_URL"] == "redis://cache.internal:6379/0"
    assert settings["ALLOWED_HOSTS"] == ["argus.example.com"]
    assert settings["EMAIL_HOST"] == "smtp.example.com"
    assert settings["EMAIL_PORT"] == 2525
    assert settings["EMAIL_HOST_PASSWORD"] == "p@ss"
    assert settings["EMAIL_USE_TLS"] is True
    assert settings["SESSION_COOKIE_SECURE"] is True
    assert settings["ACCOUNT_EMAIL_VERIFICATION"] == "mandatory"
    assert settings["ARGUS_PUBLIC_URL"] == "https://argus.example.com"
    assert settings["CACHES"]["default"]["LOCATION"] == "redis://cache.internal:6379/0"


def test_empty_secret_file_is_refused(environment, tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    environment(SECRET_KEY_FILE=str(empty))
    with pytest.raises(env.SettingError, match=r"SECRET_KEY_FILE: .* is empty"):
        load_settings()


def test_encryption_key_from_file(environment, tmp_path):
    key = tmp_path / "key"
    key.write_text(PRODUCTION["ARGUS_ENCRYPTION_KEY"])
    production = {k: v for k, v in PRODUCTION.items() if k != "ARGUS_ENCRYPTION_KEY"}
    environment(**production, ARGUS_ENCRYPTION_KEY_FILE=str(key))
    assert load_settings()["ARGUS_ENCRYPTION_KEY"] == PRODUCTION["ARGUS_ENCRYPTION_KEY"]


def test_secret_from_file(environment, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("f" * 60 + "\n")
    production = {k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"}
    environment(**production, SECRET_KEY_FILE=str(secret))
    assert load_settings()["SECRET_KEY"] == "f" * 60


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"DEBUG": "maybe"}, "DEBUG: expected a boolean"),
        ({"DATABASE_URL": "mysql://u@h/db"}, "DATABASE_URL: unsupported scheme 'mysql'"),
        ({"DATABASE_URL": "postgres://u@h:5432"}, "DATABASE_URL: no database name"),
        ({"REDIS_URL": "http://cache:6379"}, "REDIS_URL: expected a redis://"),
        ({"REDIS_URL": "redis://cache:notaport/0"}, "REDIS_URL: bad port"),
        ({"ALLOWED_HOSTS": "a.example.com,,b.example.com"}, "ALLOWED_HOSTS: empty item"),
        ({"CSRF_TRUSTED_ORIGINS": "argus.example.com"}, "CSRF_TRUSTED_ORIGINS: 'argus.example"),
        ({"TIME_ZONE": "Mars/Olympus"}, "TIME_ZONE: unknown time zone 'Mars/Olympus'"),
        ({"EMAIL_URL": "pigeon://coop"}, "EMAIL_URL: unsupported scheme 'pigeon'"),
        ({"EMAIL_URL": "smtp://"}, "EMAIL_URL: no host"),
        ({"ARGUS_HEARTBEAT_INTERVAL": "soon"}, "ARGUS_HEARTBEAT_INTERVAL: expected an integer"),
        ({"ARGUS_EVENT_RETENTION": "0"}, "ARGUS_EVENT_RETENTION: must be at least 1"),
        ({"ARGUS_ENCRYPTION_KEY": "too-short"}, "ARGUS_ENCRYPTION_KEY: must be 32 random bytes"),
        ({"ARGUS_LOG_LEVEL": "LOUD"}, "ARGUS_LOG_LEVEL: expected one of"),
        ({"SECRET_KEY_FILE": "/nonexistent/secret"}, "SECRET_KEY_FILE: cannot read"),
        ({"SECRET_KEY": "x" * 60, "SECRET_KEY_FILE": "/etc/hostname"}, "SECRET_KEY: set either"),
        ({"EMAIL_URL": "smtp://mail.example.com?timeout=soon"}, "EMAIL_URL: timeout must be"),
        ({"ARGUS_HEARTBEAT_TTL": "5"}, "ARGUS_HEARTBEAT_TTL: must be greater than"),
        ({"ARGUS_ENCRYPTION_KEY_FILE": "/nonexistent/key"}, "ARGUS_ENCRYPTION_KEY_FILE: cannot"),
        ({"ARGUS_SIGNUP": "everyone"}, "ARGUS_SIGNUP: expected one of closed, invite, open"),
        ({"ARGUS_EMAIL_VERIFICATION": "maybe"}, "ARGUS_EMAIL_VERIFICATION: expected one of"),
        ({"ARGUS_API_KEY_RATE": "lots"}, "ARGUS_API_KEY_RATE: expected a rate like 600/min"),
        ({"ARGUS_PUBLIC_URL": "argus.example.com"}, "ARGUS_PUBLIC_URL: expected an http(s) URL"),
        ({"ARGUS_INVITATION_DAYS": "0"}, "ARGUS_INVITATION_DAYS: must be at least 1"),
    ],
)
def test_bad_values_name_the_variable(environment, values, message):
    environment(**values)
    with pytest.raises(env.SettingError) as error:
        load_settings()
    assert message in str(error.value)


@pytest.mark.parametrize("missing", ["SECRET_KEY", "ARGUS_ENCRYPTION_KEY", "ALLOWED_HOSTS"])
def test_production_requires_secrets_and_hosts(environment, missing):
    environment(**{k: v for k, v in PRODUCTION.items() if k != missing})
    with pytest.raises(env.SettingError, match=f"^{missing}: .*required"):
        load_settings()


def test_short_secret_key_refused_in_production(environment):
    environment(**{**PRODUCTION, "SECRET_KEY": "short"})
    with pytest.raises(env.SettingError, match="SECRET_KEY: must be at least 50"):
        load_settings()


def _argus(*args, extra_env, tmp_path):
    base = {k: v for k, v in os.environ.items() if k not in NAMES}
    base.pop("DJANGO_SETTINGS_MODULE", None)
    base["ARGUS_DATA_DIR"] = str(tmp_path / "data")
    return subprocess.run(
        [sys.executable, "-m", "argus", *args],
        env={**base, **extra_env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bad_value_stops_startup_with_a_message(tmp_path):
    result = _argus("check", extra_env={"DEBUG": "sometimes"}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "DEBUG: expected a boolean" in result.stderr


def test_production_settings_pass_check_deploy(tmp_path):
    result = _argus(
        "check", "--deploy", "--fail-level", "WARNING", extra_env=PRODUCTION, tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_read_or_generate_is_shared_between_processes(tmp_path):
    store = Path(tmp_path) / "secrets" / "k"
    first = env.read_or_generate_secret("ARGUS_TEST_UNSET_SECRET", store, generate=True)
    second = env.read_or_generate_secret("ARGUS_TEST_UNSET_SECRET", store, generate=True)
    assert first == second

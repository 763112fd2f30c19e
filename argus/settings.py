"""Django settings for Argus, read from the environment only (see README, "Configuration").

With neither ``DATABASE_URL`` nor ``REDIS_URL`` set Argus runs embedded: SQLite and an
embedded Redis-compatible broker under ``ARGUS_DATA_DIR``, and secrets generated there
on first start.
"""

import base64
import binascii
from pathlib import Path

from argus import env

BASE_DIR = Path(__file__).resolve().parent.parent

DATA_DIR = Path(env.read_str("ARGUS_DATA_DIR", str(BASE_DIR / "var"))).resolve()
# Private: it holds the database, generated secrets and the broker's data.
DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
DATABASE_URL_SET = env.read_raw("DATABASE_URL", secret=True) is not None
DATABASES = {"default": env.read_database("DATABASE_URL", DATA_DIR / "argus.sqlite3")}
REDIS_URL_SET = env.read_redis_url("REDIS_URL") is not None
EMBEDDED = not DATABASE_URL_SET and not REDIS_URL_SET
DEBUG = env.read_bool("DEBUG", default=False)

# --- secrets ---------------------------------------------------------------------
_generate_secrets = EMBEDDED or DEBUG
SECRET_KEY = env.read_or_generate_secret(
    "SECRET_KEY", DATA_DIR / "secrets" / "secret_key", generate=_generate_secrets
)
if len(SECRET_KEY) < 50 and not _generate_secrets:
    raise env.SettingError("SECRET_KEY", "must be at least 50 characters long")
ARGUS_ENCRYPTION_KEY = env.read_or_generate_secret(
    "ARGUS_ENCRYPTION_KEY",
    DATA_DIR / "secrets" / "encryption_key",
    generate=_generate_secrets,
    length=32,
)


def _decode_encryption_key(value: str) -> bytes | None:
    """The 32 bytes of a URL-safe base64 key, or ``None`` when it is not one."""
    try:
        key = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == 32 else None


_primary_key = _decode_encryption_key(ARGUS_ENCRYPTION_KEY)
if _primary_key is None:
    raise env.SettingError(
        "ARGUS_ENCRYPTION_KEY",
        "must be 32 random bytes in URL-safe base64; generate one with: "
        "python -c 'import secrets; print(secrets.token_urlsafe(32))'",
    )
# Older keys, still read while `argus rotate-encryption-key` re-encrypts under the new one.
_fallbacks = env.read_str("ARGUS_ENCRYPTION_KEY_FALLBACKS", secret=True)
ARGUS_ENCRYPTION_KEY_FALLBACKS = (
    [key.strip() for key in _fallbacks.split(",")] if _fallbacks else []
)
# The keys crypto.py decrypts with, in order; the first (primary) one encrypts.
ARGUS_ENCRYPTION_KEYS = [_primary_key]
for _position, _fallback in enumerate(ARGUS_ENCRYPTION_KEY_FALLBACKS, start=1):
    _key = _decode_encryption_key(_fallback) if _fallback else None
    if _key is None:
        raise env.SettingError(
            "ARGUS_ENCRYPTION_KEY_FALLBACKS",
            f"key {_position} of {len(ARGUS_ENCRYPTION_KEY_FALLBACKS)} "
            + ("is empty" if not _fallback else "is not 32 bytes in URL-safe base64")
            + "; list the previous values of ARGUS_ENCRYPTION_KEY, comma-separated",
        )
    ARGUS_ENCRYPTION_KEYS.append(_key)

# --- hosts and security ---------------------------------------------------------------
ALLOWED_HOSTS = env.read_list(
    "ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if (EMBEDDED or DEBUG) else []
)
if not ALLOWED_HOSTS:
    raise env.SettingError("ALLOWED_HOSTS", "is required in production (comma-separated hosts)")
CSRF_TRUSTED_ORIGINS = env.read_origins("CSRF_TRUSTED_ORIGINS")

# Behind TLS in production; the embedded mode serves plain HTTP on loopback.
SECURE = env.read_bool("ARGUS_SECURE", default=not (EMBEDDED or DEBUG))
SESSION_COOKIE_SECURE = SECURE
CSRF_COOKIE_SECURE = SECURE
SECURE_SSL_REDIRECT = SECURE and env.read_bool("ARGUS_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.read_int("ARGUS_HSTS_SECONDS", 31536000 if SECURE else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0 and env.read_bool("ARGUS_HSTS_PRELOAD", default=True)
SECURE_REDIRECT_EXEMPT = [r"^health/$"]
if env.read_bool("ARGUS_BEHIND_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# --- applications ---------------------------------------------------------------------
INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "django_celery_beat",
    "django_htmx",
    "django_filters",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "argus",
    "orgs",
    "tools",
    "agents",
    "recordings",
    "tasks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "argus.middleware.RequestIdMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "orgs.middleware.CurrentOrganizationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "argus.urls"
ASGI_APPLICATION = "argus.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "argus.console.navigation",
                "orgs.context_processors.signup",
            ],
        },
    },
]

# --- data ---------------------------------------------------------------------------
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "orgs.User"

# Redis serves Celery (broker), Channels (layer) and the event log. Embedded mode
# runs its own server on a Unix socket inside the data dir (argus/embedded.py).
if REDIS_URL_SET:
    REDIS_URL = env.read_redis_url("REDIS_URL")
else:
    from argus.embedded import broker_socket_path

    REDIS_URL = f"unix://{broker_socket_path(DATA_DIR)}"

# Shared by every process: API throttling, allauth's rate limits.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "argus:cache",
    }
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": REDIS_URL}],
            "prefix": "argus:asgi",
            "capacity": 1000,
            "expiry": 60,
        },
    }
}

# --- Celery (argus/celery.py reads the CELERY_ names) -----------------------------------
CELERY_BROKER_URL = (
    "redis+socket://" + REDIS_URL.removeprefix("unix://")
    if REDIS_URL.startswith("unix://")
    else REDIS_URL
)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_EVENT_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULER = "argus.beat:HeartbeatScheduler"
# How often worker and beat prove they are alive, and how old a proof may get.
ARGUS_HEARTBEAT_INTERVAL = env.read_int("ARGUS_HEARTBEAT_INTERVAL", 5, minimum=1)
ARGUS_HEARTBEAT_TTL = env.read_int("ARGUS_HEARTBEAT_TTL", 20, minimum=2)
if ARGUS_HEARTBEAT_TTL <= ARGUS_HEARTBEAT_INTERVAL:
    raise env.SettingError(
        "ARGUS_HEARTBEAT_TTL",
        f"must be greater than ARGUS_HEARTBEAT_INTERVAL ({ARGUS_HEARTBEAT_INTERVAL})",
    )
CELERY_BEAT_SCHEDULE = {
    "argus-heartbeat": {
        "task": "argus.heartbeat",
        "schedule": float(ARGUS_HEARTBEAT_INTERVAL),
        # A heartbeat nobody ran in time is worthless: never let them pile up.
        "options": {"expires": ARGUS_HEARTBEAT_INTERVAL * 2},
    }
}

# --- realtime ---------------------------------------------------------------------------
# Recent events kept per topic for clients that reconnect with `after`.
ARGUS_EVENT_RETENTION = env.read_int("ARGUS_EVENT_RETENTION", 500, minimum=1)
ARGUS_EVENT_TTL = env.read_int("ARGUS_EVENT_TTL", 86400, minimum=60)

# --- MCP servers --------------------------------------------------------------------------
# stdio servers run commands on the Argus host; network servers are refused on private and
# loopback addresses (tools/network.py). Both are on by default in embedded mode only.
ARGUS_ALLOW_STDIO = env.read_bool("ARGUS_ALLOW_STDIO", default=EMBEDDED)
ARGUS_ALLOW_PRIVATE_NETWORKS = env.read_bool("ARGUS_ALLOW_PRIVATE_NETWORKS", default=EMBEDDED)
# The per-process pool of warm MCP sessions (tools/mcp/pool.py).
ARGUS_MCP_POOL_SIZE = env.read_int("ARGUS_MCP_POOL_SIZE", 32, minimum=1)
ARGUS_MCP_IDLE_SECONDS = env.read_int("ARGUS_MCP_IDLE_SECONDS", 300, minimum=1)
# Health: how often beat looks for due checks, when a server that answers is "slow"
# (DEGRADED), and how many checks each server keeps for its sparkline.
ARGUS_HEALTH_DISPATCH_SECONDS = env.read_int("ARGUS_HEALTH_DISPATCH_SECONDS", 10, minimum=1)
ARGUS_HEALTH_SLOW_MS = env.read_int("ARGUS_HEALTH_SLOW_MS", 2000, minimum=1)
ARGUS_HEALTH_HISTORY = env.read_int("ARGUS_HEALTH_HISTORY", 100, minimum=2)
# The longest a tool call started from the console or the API ("Try it") may take.
ARGUS_TOOL_CALL_MAX_SECONDS = env.read_int("ARGUS_TOOL_CALL_MAX_SECONDS", 120, minimum=1)
CELERY_BEAT_SCHEDULE["tools-health-checks"] = {
    "task": "tools.dispatch_health_checks",
    "schedule": float(ARGUS_HEALTH_DISPATCH_SECONDS),
    "options": {"expires": ARGUS_HEALTH_DISPATCH_SECONDS * 2},
}

# Agents: how long an approval request waits for a decision, and after how many identical
# consecutive tool calls (same tool, same arguments) the gate stops an execution.
ARGUS_APPROVAL_EXPIRY_HOURS = env.read_int("ARGUS_APPROVAL_EXPIRY_HOURS", 168, minimum=1)
ARGUS_LOOP_DETECTION_REPEATS = env.read_int("ARGUS_LOOP_DETECTION_REPEATS", 5, minimum=2)
CELERY_BEAT_SCHEDULE["agents-expire-approvals"] = {
    "task": "agents.expire_approvals",
    "schedule": 60.0,
    "options": {"expires": 120},
}

# --- auth and sessions --------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 10},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "console:dashboard"
LOGOUT_REDIRECT_URL = "account_login"
SESSION_ENGINE = "django.contrib.sessions.backends.db"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

# allauth: email is the login; the signup policy lives in orgs.adapter.AccountAdapter.
ARGUS_SIGNUP = env.read_choice("ARGUS_SIGNUP", "invite", {"invite", "open", "closed"})
ACCOUNT_ADAPTER = "orgs.adapter.AccountAdapter"
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_UNIQUE_EMAIL = True
# Embedded mode prints mail to the console, so verification would only lock people out.
ACCOUNT_EMAIL_VERIFICATION = env.read_choice(
    "ARGUS_EMAIL_VERIFICATION", "none" if EMBEDDED else "mandatory", {"none", "mandatory"}
)
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_SESSION_REMEMBER = None
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Argus] "
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https" if SECURE else "http"
# allauth's defaults (login failures per IP and per account, resets, signups) stay on.
ACCOUNT_RATE_LIMITS = {}
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "Argus"

# guardian stores per-object grants; anonymous users never hold any. Grants are read
# by orgs.permissions (with teams), never through user.has_perm, so guardian's
# authentication backend is deliberately not installed.
ANONYMOUS_USER_NAME = None
SILENCED_SYSTEM_CHECKS = ["guardian.W001"]
GUARDIAN_RAISE_403 = False

# Keyed hash of API keys: derived from SECRET_KEY (and SECRET_KEY_FALLBACKS while rotating).
SECRET_KEY_FALLBACKS = env.read_list("SECRET_KEY_FALLBACKS", [])
ARGUS_API_KEY_RATE = env.read_rate("ARGUS_API_KEY_RATE", "600/min")
ARGUS_INVITATION_DAYS = env.read_int("ARGUS_INVITATION_DAYS", 7, minimum=1)
# Where people reach this installation: links in emails (invitations) point here.
ARGUS_PUBLIC_URL = env.read_base_url(
    "ARGUS_PUBLIC_URL",
    "http://localhost:8000" if (EMBEDDED or DEBUG) else f"https://{ALLOWED_HOSTS[0]}",
)

# --- REST API ----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "orgs.api.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["orgs.api.throttling.ApiKeyRateThrottle"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "argus.api.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "argus.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Argus API",
    "DESCRIPTION": "Control plane and flight recorder for MCP agents.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several vocabularies share a field name (``role``, ``status``): name each enum.
    "ENUM_NAME_OVERRIDES": {
        "RoleEnum": "orgs.choices.Role",
        "ServerStatusEnum": "tools.choices.ServerStatus",
        "AgentRoleEnum": "agents.choices.AgentRole",
        "AgentStatusEnum": "agents.choices.AgentStatus",
        "ApprovalStatusEnum": "agents.choices.ApprovalStatus",
    },
}

# --- email ---------------------------------------------------------------------------------
globals().update(env.read_email("EMAIL_URL", "console://"))
DEFAULT_FROM_EMAIL = env.read_str("DEFAULT_FROM_EMAIL", "Argus <argus@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- i18n, static ---------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env.read_timezone("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve straight from the finders in embedded mode, so no collectstatic step is needed.
WHITENOISE_USE_FINDERS = EMBEDDED or DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
_static_root = env.read_str("ARGUS_STATIC_ROOT")
STATIC_ROOT = (
    Path(_static_root) if _static_root else None if WHITENOISE_USE_FINDERS else DATA_DIR / "static"
)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG or EMBEDDED
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
# --- logging ------------------------------------------------------------------------------------
LOG_LEVEL = env.read_choice(
    "ARGUS_LOG_LEVEL", "INFO", {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

"""Test settings: production settings plus what only tests need.

Tests run with or without DATABASE_URL/REDIS_URL. Secrets get throwaway values, the
data dir is a fresh temporary directory (inherited by the processes tests start), and
the SQLite test database is a file so those processes can share it.
"""

import atexit
import os
import shutil
import tempfile

# Never the developer's own data dir: one made by the test run, inherited by the
# processes it starts, removed when the run exits.
if not os.environ.get("ARGUS_TEST_DATA_DIR"):
    os.environ["ARGUS_TEST_DATA_DIR"] = tempfile.mkdtemp(prefix="argus-test-")
    atexit.register(shutil.rmtree, os.environ["ARGUS_TEST_DATA_DIR"], ignore_errors=True)
os.environ["ARGUS_DATA_DIR"] = os.environ["ARGUS_TEST_DATA_DIR"]
os.environ.setdefault("SECRET_KEY", "test-secret-key-" + "x" * 40)
os.environ.setdefault("ARGUS_ENCRYPTION_KEY", "dGVzdC1lbmNyeXB0aW9uLWtleS0zMi1ieXRlcy0hISE")
os.environ.setdefault("ALLOWED_HOSTS", "localhost,127.0.0.1,testserver")
os.environ.setdefault("ARGUS_SECURE", "false")
# Demo MCP servers run on loopback and over stdio; refusals use override_settings.
os.environ.setdefault("ARGUS_ALLOW_PRIVATE_NETWORKS", "true")
os.environ.setdefault("ARGUS_ALLOW_STDIO", "true")

from argus.settings import *  # noqa: F403
from argus.settings import DATA_DIR, DATABASES

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Production serves collected, hashed files; tests serve the sources directly.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
STATIC_ROOT = None

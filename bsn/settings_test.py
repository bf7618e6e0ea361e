"""Test settings: PostgreSQL and Redis by default (what `make test` starts)."""

import os

# Defaults only; CI or a developer can point elsewhere with the same variables.
os.environ.setdefault("DATABASE_URL", "postgres:///bsn?host=/var/run/postgresql")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("BSN_DATA_DIR", os.path.join(os.path.dirname(os.path.dirname(__file__)), ".data", "test"))
os.environ.setdefault("BSN_SECRET_KEY", "test-only-not-secret")
os.environ.setdefault("BSN_NODE_HEALTH_TIMEOUT", "30")
# One default queue per pytest process (the workers it starts inherit the variable): two runs
# on one machine share Redis, and a worker of one must never take the other's tasks.
os.environ.setdefault("BSN_DEFAULT_QUEUE", f"default-test-{os.getpid()}")
# Gateway counters per pytest process too (a flush takes every hour hash under its prefix).
os.environ.setdefault("BSN_METERING_REDIS_PREFIX", f"bsn:meter:test-{os.getpid()}:")

from bsn.settings import *

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed; tests only
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# One test database per pytest process, so that two runs on one machine (a developer's and
# an agent's, or two terminals) never create and drop each other's database mid-run.
# Set BSN_TEST_DB_NAME to choose the name (CI leaves it at the default).
DATABASES["default"]["TEST"] = {"NAME": os.environ.get("BSN_TEST_DB_NAME") or f"test_bsn_{os.getpid()}"}

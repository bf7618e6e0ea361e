"""`make bench`: each figure as a ratio against a reference measured in the same run.

Runs against the real services (PostgreSQL database `bsn_bench`, Redis, Docker) with a real
Celery worker; every load loop is bounded in count and time and talks only to loopback.
Results are printed and written to docs/benchmarks.md.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bsn.settings_test")
os.environ.setdefault("DATABASE_URL", "postgres:///bsn_bench?host=/var/run/postgresql")


def main() -> int:
    from tests.bench.database import fresh_database

    fresh_database()
    import django

    django.setup()
    from tests.bench import suite

    return suite.run(only=sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())

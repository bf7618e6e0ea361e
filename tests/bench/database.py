"""The bench's databases: each run starts on a fresh one (a new installation id, so nothing
of an earlier run is reused), named by DATABASE_URL so that runs from several worktrees, and
the three-engine run beside the main one (tests/bench/engines.py), use their own. No Django
here: called before ``django.setup()``."""

from __future__ import annotations

import os
import subprocess
from urllib.parse import urlparse

PG_ENV = {"PGHOST": "/var/run/postgresql"}


def database_name() -> str:
    return urlparse(os.environ["DATABASE_URL"]).path.lstrip("/") or "bsn_bench"


def fresh_database() -> str:
    """Drop and create DATABASE_URL's database; its name."""
    name = database_name()
    for argv in (["dropdb", "--if-exists", name], ["createdb", name]):
        subprocess.run(argv, check=True, env={**os.environ, **PG_ENV})
    return name


def drop_database(name: str) -> None:
    subprocess.run(["dropdb", "--if-exists", name], check=False, env={**os.environ, **PG_ENV})

"""How a bsn Celery worker process is started (one place for `bsn_worker` and the tests)."""

from __future__ import annotations

import sys


def worker_argv(
    queues: list[str], *, concurrency: int, name: str, extra: list[str] | tuple[str, ...] = ()
) -> list[str]:
    """argv of a thread-pool worker consuming ``queues`` (node steps are I/O-bound waits)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bsn.celery",
        "worker",
        "-Q",
        ",".join(queues),
        "-P",
        "threads",
        "-c",
        str(concurrency),
        "--loglevel",
        "INFO",
        "-n",
        name,
        *extra,
    ]

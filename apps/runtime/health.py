"""Health probes of a node's published endpoint.

Only ever talks to the endpoint it is given (no proxies from the environment, no
redirects followed), with short per-request timeouts.
"""

from __future__ import annotations

import time
from typing import Any

import requests

from apps.runtime.base import TransientRuntimeError

REQUEST_TIMEOUT = 1.0


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # ignore HTTP(S)_PROXY: a node endpoint is never proxied
    return session


def _url(endpoint: str, path: str) -> str:
    return endpoint.rstrip("/") + "/" + path.lstrip("/")


def probe(endpoint: str, path: str, timeout: float = REQUEST_TIMEOUT) -> bool:
    """True if the endpoint answers 200 on ``path`` right now."""
    with _session() as session:
        try:
            return session.get(_url(endpoint, path), timeout=timeout, allow_redirects=False).status_code == 200
        except requests.RequestException:
            return False


def wait_healthy(endpoint: str, path: str, timeout: float, interval: float = 0.1) -> dict[str, Any]:
    """Poll until ``path`` answers 200; return its JSON body (or ``{}`` if not JSON).

    Raises TransientRuntimeError with the last error if ``timeout`` seconds pass.
    """
    url = _url(endpoint, path)
    deadline = time.monotonic() + timeout
    last_error = "no attempt made"
    with _session() as session:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                response = session.get(url, timeout=min(REQUEST_TIMEOUT, remaining), allow_redirects=False)
            except requests.RequestException as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    try:
                        body = response.json()
                    except ValueError:
                        return {}
                    return body if isinstance(body, dict) else {"body": body}
                last_error = f"HTTP {response.status_code}: {response.text[:200]}"
            time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
    raise TransientRuntimeError(f"{url} not healthy after {timeout:.1f}s; last error: {last_error}")

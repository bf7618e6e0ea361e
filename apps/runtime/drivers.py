"""Which driver runs a region's nodes: one cached instance per region configuration."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from apps.runtime.base import PermanentRuntimeError, RuntimeDriver

_cache: dict[tuple[Any, ...], RuntimeDriver] = {}
_lock = threading.Lock()


def _tls_config(region: Any) -> Any:
    import docker.tls

    ca = (getattr(region, "tls_ca_file", "") or "").strip()
    cert = (getattr(region, "tls_cert_file", "") or "").strip()
    key = (getattr(region, "tls_key_file", "") or "").strip()
    if not (ca or cert or key):
        return None
    if bool(cert) != bool(key):
        raise PermanentRuntimeError(f"region {region.code}: tls_cert_file and tls_key_file go together")
    for path in (ca, cert, key):
        if path and not Path(path).is_file():
            raise PermanentRuntimeError(f"region {region.code}: TLS file {path} does not exist")
    return docker.tls.TLSConfig(client_cert=(cert, key) if cert else None, ca_cert=ca or None, verify=ca or True)


def driver_for_region(region: Any) -> RuntimeDriver:
    """The driver for ``region`` (anything with driver, docker_base_url, tls_*_file, code)."""
    from django.conf import settings

    kind = region.driver
    if kind == "docker":
        base_url = (region.docker_base_url or "").strip() or settings.BSN_DOCKER_BASE_URL
        tls_files = tuple((getattr(region, f, "") or "") for f in ("tls_ca_file", "tls_cert_file", "tls_key_file"))
        key: tuple[Any, ...] = ("docker", region.code, base_url, settings.BSN_DOCKER_TIMEOUT, tls_files)
    elif kind == "process":
        root = Path(settings.BSN_PROCESS_DIR) / region.code
        key = ("process", region.code, str(root))
    else:
        raise PermanentRuntimeError(f"region {region.code}: unknown driver {kind!r}")

    with _lock:
        driver = _cache.get(key)
        if driver is None:
            if kind == "docker":
                from apps.runtime.docker import DockerDriver

                driver = DockerDriver(base_url, settings.BSN_DOCKER_TIMEOUT, tls=_tls_config(region))
            else:
                from apps.runtime.process import ProcessDriver

                driver = ProcessDriver(root)
            _cache[key] = driver
        return driver


def engine_key(region: Any) -> str:
    """Which engine a region's nodes run on, as ``<driver>:<where>``: Docker regions by
    the URL their driver uses (a blank URL is the local engine's), process regions all on
    this host. Regions with the same key share one engine."""
    if region.driver == "docker":
        return f"docker:{driver_for_region(region).base_url}"
    return f"{region.driver}:local"


def same_engine(a: Any, b: Any) -> bool:
    """Do regions ``a`` and ``b`` run their containers on one Docker engine (so containers
    can share networks and reach each other by name)?"""
    if a.pk == b.pk:
        return True
    return a.driver == b.driver == "docker" and engine_key(a) == engine_key(b)


def clear_driver_cache() -> None:
    """For tests and settings changes."""
    with _lock:
        _cache.clear()


def docker_engine_answers(base_url: str, timeout: float = 2.0) -> bool:
    """Quick yes/no: does a Docker engine answer at ``base_url``? Picks the default driver."""
    import docker
    import requests

    # Any of these means "no usable engine here"; the SDK raises DockerException from
    # the constructor when the version probe fails.
    expected = (docker.errors.DockerException, requests.RequestException, OSError)
    try:
        client = docker.DockerClient(base_url=base_url, timeout=timeout, version="auto")
    except expected:
        return False
    try:
        return bool(client.ping())
    except expected:
        return False
    finally:
        client.close()

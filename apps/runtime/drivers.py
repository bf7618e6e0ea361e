"""Which driver runs a region's nodes: one cached instance per region configuration."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from apps.runtime.base import PermanentRuntimeError, RuntimeDriver

_cache: dict[tuple[Any, ...], RuntimeDriver] = {}
_lock = threading.Lock()


def _tls_config(region: Any, tls: Any) -> Any:
    """docker.tls.TLSConfig of a region's engine (apps/regions/engine_tls.py), or None."""
    import docker.tls
    from django.conf import settings

    from apps.regions.engine_tls import EngineTLSInvalid, check_engine_access, tls_files

    try:
        check_engine_access(
            region.driver, region.docker_base_url or "", tls, allow_insecure=settings.BSN_ALLOW_INSECURE_ENGINES
        )
    except EngineTLSInvalid as exc:
        raise PermanentRuntimeError(f"region {region.code}: {exc}") from None
    if tls is None:
        return None
    ca, cert, key = tls_files(tls)
    return docker.tls.TLSConfig(client_cert=(cert, key), ca_cert=ca, verify=ca)


def _region_tls(region: Any) -> Any:
    get = getattr(region, "tls", None)
    return get() if callable(get) else None


def driver_for_region(region: Any) -> RuntimeDriver:
    """The driver for ``region`` (anything with driver, docker_base_url, code and
    optionally ``tls()``, see apps/regions/models.py)."""
    from django.conf import settings

    kind = region.driver
    if kind == "docker":
        base_url = (region.docker_base_url or "").strip() or settings.BSN_DOCKER_BASE_URL
        tls = _region_tls(region)
        fingerprint = tls.fingerprint if tls else ""
        key: tuple[Any, ...] = ("docker", region.code, base_url, settings.BSN_DOCKER_TIMEOUT, fingerprint)
    elif kind == "swarm":
        base_url = (region.docker_base_url or "").strip() or settings.BSN_DOCKER_BASE_URL
        tls = _region_tls(region)
        fingerprint = tls.fingerprint if tls else ""
        mode = getattr(region, "publish_mode", "") or "host"
        key = ("swarm", region.code, base_url, settings.BSN_DOCKER_TIMEOUT, fingerprint, mode)
        encrypted = bool(getattr(region, "overlay_encryption", True))
        key += (settings.BSN_SWARM_HEALTH_INTERVAL, encrypted)
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

                driver = DockerDriver(
                    base_url,
                    settings.BSN_DOCKER_TIMEOUT,
                    tls=_tls_config(region, tls),
                    image_source_url=settings.BSN_IMAGE_SOURCE_URL or None,
                )
            elif kind == "swarm":
                from apps.runtime.swarm import SwarmDriver

                driver = SwarmDriver(
                    base_url,
                    settings.BSN_DOCKER_TIMEOUT,
                    region_code=region.code,
                    tls=_tls_config(region, tls),
                    image_source_url=settings.BSN_IMAGE_SOURCE_URL or None,
                    publish_mode=mode,
                    health_interval=settings.BSN_SWARM_HEALTH_INTERVAL,
                    overlay_encryption=encrypted,
                )
            else:
                from apps.runtime.process import ProcessDriver

                driver = ProcessDriver(root)
            _cache[key] = driver
        return driver


def driver_class(kind: str) -> type:
    """The class of the ``kind`` of driver (``Region.driver``): what it declares
    (``CAPABILITIES``) without making one, e.g. inside a request's transaction."""
    if kind == "docker":
        from apps.runtime.docker import DockerDriver

        return DockerDriver
    if kind == "swarm":
        from apps.runtime.swarm import SwarmDriver

        return SwarmDriver
    if kind == "process":
        from apps.runtime.process import ProcessDriver

        return ProcessDriver
    raise PermanentRuntimeError(f"unknown driver {kind!r}")


def engine_key(region: Any) -> str:
    """Which engine a region's nodes run on, as ``<driver>:<where>``: Docker regions by
    the URL their driver uses (a blank URL is the local engine's), process regions all on
    this host. Regions with the same key share one engine."""
    if region.driver in ("docker", "swarm"):
        return f"{region.driver}:{driver_for_region(region).base_url}"
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

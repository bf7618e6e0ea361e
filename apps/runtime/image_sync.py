"""The ledger image reaches every region's engine without a registry.

Images are built on one engine (``bsn_images build`` on the control plane's engine,
``BSN_IMAGE_SOURCE_URL``, default ``BSN_DOCKER_BASE_URL``). Before a container is created
on another engine, ``image_ensure`` compares the image *id* there with the source's -- the
id is the sha256 of the image's configuration, so equal ids are equal content -- and, if
it is missing or differs (a stale ``bsn/ledger:latest``), streams ``docker save`` from the
source straight into ``docker load`` on the target (no temporary file, no registry), then
checks the id again. On the source engine itself, or when both ids agree, nothing moves.

Written by hand rather than with a registry because the machines this runs on cannot
reach one (docs/operations.md, "Regions on other engines").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import docker
import docker.errors

from apps.runtime.base import PermanentRuntimeError, TransientRuntimeError

logger = logging.getLogger(__name__)

# One transfer per target engine at a time in this process: parallel node steps on a new
# engine wait for the first transfer instead of each streaming 150 MB. (Another process
# doing the same transfer is harmless: ``docker load`` of an image it holds is a no-op.)
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
# (target url, ref) -> (image id, monotonic time checked): skip the two inspects for a while.
_verified: dict[tuple[str, str], tuple[str, float]] = {}
VERIFIED_FOR_S = 30.0


def _lock_for(url: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(url, threading.Lock())


def image_id(client: docker.DockerClient, ref: str) -> str | None:
    try:
        return client.images.get(ref).id
    except docker.errors.ImageNotFound:
        return None


def image_ensure(
    target: docker.DockerClient,
    target_url: str,
    ref: str,
    source: Callable[[], docker.DockerClient | None],
) -> str:
    """Make ``ref`` on ``target`` the same image (same id) as on the source engine; returns
    the id. ``source()`` gives a client of the source engine, or None when there is none
    (then the target must already hold ``ref``). Raises PermanentRuntimeError when neither
    engine has the image, TransientRuntimeError when a transfer did not produce it."""
    cached = _verified.get((target_url, ref))
    if cached and time.monotonic() - cached[1] < VERIFIED_FOR_S:
        return cached[0]
    with _lock_for(target_url):
        source_client = source()
        want = image_id(source_client, ref) if source_client is not None else None
        have = image_id(target, ref)
        if want is None:
            if have is None:
                raise PermanentRuntimeError(
                    f"image {ref} is neither on the engine at {target_url} nor on the image source engine; "
                    "build it with `python manage.py bsn_images build` (no registry is used)"
                )
            _verified[(target_url, ref)] = (have, time.monotonic())
            return have  # no source to compare with: the target's own image
        if have != want:
            started = time.monotonic()
            logger.info(
                "image %s (%s) is %s on %s: streaming it from the source engine",
                ref,
                want[7:19],
                f"stale ({have[7:19]})" if have else "missing",
                target_url,
            )
            image = source_client.images.get(ref)
            # The archive names ``ref`` when it is one of the image's tags (else only the id).
            target.images.load(image.save(named=ref if ref in image.tags else False))
            have = image_id(target, ref)
            if have != want and image_id(target, want) == want and ":" in ref and not ref.startswith("sha256:"):
                repository, _, version = ref.rpartition(":")
                target.images.get(want).tag(repository, version)  # an id-only archive: name it
                have = image_id(target, ref)
            if have != want:
                raise TransientRuntimeError(
                    f"loading image {ref} onto {target_url} gave {have or 'nothing'}, not {want}; trying again"
                )
            logger.info("image %s on %s after %.1f s", ref, target_url, time.monotonic() - started)
        _verified[(target_url, ref)] = (want, time.monotonic())
        return want


def forget() -> None:
    """For tests: check both engines again next time."""
    _verified.clear()

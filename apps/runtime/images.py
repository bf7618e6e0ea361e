"""Building the ledger node image, with or without a container registry.

Two halves, as in the other runtime adapters:

- pure helpers — which files go into the build context, the content hash, the
  deterministic context tarball, the host's Debian mirror, the debootstrap command line
  (unit tested in tests/runtime/test_images.py without an engine);
- thin functions that talk to the Docker Engine: ``base_image_ensure`` and
  ``ledger_image_ensure`` (tested against a real engine in the same module).

The ledger image is tagged ``bsn/ledger:<content-hash-12>`` and ``bsn/ledger:latest``.
The content hash covers the Dockerfile, ``bsn/__init__.py``, every file under
``bsn/ledger`` and the base image id, so a build whose hash tag exists is a no-op.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
from django.conf import settings

SLIM_IMAGE = "python:3.11-slim"
BASE_REPO = "bsn/base"
LEDGER_REPO = "bsn/ledger"
DOCKERFILE = "deploy/ledger/Dockerfile"
BASE_CHOICES = ("auto", "slim", "debootstrap")

LABEL_IMAGE = "io.bsn.image"  # "base" or "ledger"
LABEL_CONTENT_HASH = "io.bsn.content-hash"
LABEL_BASE_IMAGE = "io.bsn.base-image"
LABEL_RECIPE = "io.bsn.base-recipe"

# The debootstrap base. Changing anything here (or STRIP_PATHS) changes its tag.
DEBIAN_SUITE = "bookworm"
DEBIAN_VARIANT = "minbase"
# debootstrap does not resolve virtual packages, so python3-cryptography's
# python3-cffi-backend-api-* dependency is named by its provider. etcd-server: the same
# image runs the ordering service's members (apps/ordering) with a different command.
# python3-nacl (libsodium): the node's fast signature check (bsn/ledger/crypto.py).
DEBIAN_PACKAGES = ("python3-minimal", "python3-cryptography", "python3-cffi-backend", "python3-nacl", "etcd-server")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Removed from the root filesystem before import: caches, docs, locales, logs.
STRIP_PATHS = (
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/cache/debconf",
    "var/log",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/common-licenses",
    "usr/share/python-wheels",
)
IMPORT_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)

DEBOOTSTRAP_TIMEOUT = 1800  # seconds; a slow mirror, not a hang, is the usual cause
BUILD_TIMEOUT = 1800  # socket timeout for import/build/pull streams

Say = Callable[[str], None]


class ImageBuildError(Exception):
    """The image could not be built; the message says what to do about it."""


@dataclass(frozen=True)
class BuildResult:
    """What ``ledger_image_ensure`` ended with."""

    tag: str
    image_id: str
    base_image: str
    built: bool
    base_built: bool


# --------------------------------------------------------------------------- pure parts


def ledger_context_files(repo_root: Path) -> list[tuple[str, Path]]:
    """(name in the build context, path on disk) for every file the Dockerfile needs."""
    files = [("Dockerfile", repo_root / DOCKERFILE), ("bsn/__init__.py", repo_root / "bsn" / "__init__.py")]
    ledger = repo_root / "bsn" / "ledger"
    for path in sorted(ledger.rglob("*")):
        rel = path.relative_to(repo_root)
        if path.is_file() and "__pycache__" not in rel.parts and path.suffix not in {".pyc", ".pyo"}:
            files.append((rel.as_posix(), path))
    missing = [str(p) for _, p in files[:2] if not p.is_file()]
    if missing or len(files) == 2:
        raise ImageBuildError(f"ledger sources not found under {repo_root}: {', '.join(missing) or 'bsn/ledger'}")
    return files


def content_hash(files: list[tuple[str, Path]], base_image_id: str) -> str:
    """sha256 over names and contents of the context files plus the base image id."""
    digest = hashlib.sha256()
    for name, path in sorted(files):
        data = path.read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    digest.update(f"base\0{base_image_id}".encode())
    return digest.hexdigest()


def context_tar(files: list[tuple[str, Path]]) -> bytes:
    """A reproducible tarball of the build context (fixed owner, mode and mtime)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in sorted(files):
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def base_recipe_hash() -> str:
    recipe = {
        "suite": DEBIAN_SUITE,
        "variant": DEBIAN_VARIANT,
        "packages": sorted(DEBIAN_PACKAGES),
        "strip": list(STRIP_PATHS),
        "changes": list(IMPORT_CHANGES),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def base_tag() -> str:
    return f"{BASE_REPO}:{DEBIAN_SUITE}-{base_recipe_hash()[:12]}"


def apt_mirror(sources: list[tuple[str, str]], suite: str = DEBIAN_SUITE) -> str:
    """The first Debian mirror URI serving ``suite`` in apt sources given as (filename, text).

    Understands deb822 ``*.sources`` stanzas and one-line ``*.list`` entries; falls
    back to deb.debian.org.
    """
    for filename, text in sources:
        if filename.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line or line[:1].isspace():
                        continue
                    name, _, value = line.partition(":")
                    fields[name.strip().lower()] = value.strip()
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                if "deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split():
                    uris = fields.get("uris", "").split()
                    if uris:
                        return uris[0].rstrip("/")
        else:
            for line in text.splitlines():
                line = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
                if len(line) >= 3 and line[0] == "deb" and line[2] == suite:
                    return line[1].rstrip("/")
    return DEFAULT_MIRROR


def host_apt_mirror(etc_apt: str = "/etc/apt") -> str:
    names = [os.path.join(etc_apt, "sources.list")]
    names += sorted(glob.glob(os.path.join(etc_apt, "sources.list.d", "*.sources")))
    names += sorted(glob.glob(os.path.join(etc_apt, "sources.list.d", "*.list")))
    sources = []
    for name in names:
        try:
            with open(name, encoding="utf-8", errors="replace") as f:
                sources.append((name, f.read()))
        except OSError:
            continue
    return apt_mirror(sources)


def debootstrap_argv(target: str, mirror: str) -> list[str]:
    return [
        "debootstrap",
        f"--variant={DEBIAN_VARIANT}",
        f"--include={','.join(DEBIAN_PACKAGES)}",
        DEBIAN_SUITE,
        target,
        mirror,
    ]


# --------------------------------------------------------------------- engine and locks


def docker_client(*, timeout: int | None = None) -> docker.DockerClient:
    """A client for settings.BSN_DOCKER_BASE_URL; raises ImageBuildError if it does not answer."""
    url = settings.BSN_DOCKER_BASE_URL
    try:
        client = docker.DockerClient(base_url=url, timeout=timeout or settings.BSN_DOCKER_TIMEOUT)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise ImageBuildError(
            f"cannot reach the Docker engine at {url} ({exc}); start dockerd or set BSN_DOCKER_BASE_URL"
        ) from None
    return client


@contextmanager
def build_lock(say: Say) -> Iterator[None]:
    """Serialise builds on this machine (two workers may start one at the same time)."""
    path = Path(settings.DATA_DIR) / "bsn_images.lock"
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another image build to finish (lock {path})")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _image_id(client: docker.DockerClient, ref: str) -> str | None:
    try:
        return client.images.get(ref).id
    except docker.errors.ImageNotFound:
        return None
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        raise ImageBuildError(f"cannot inspect image {ref}: {exc}") from None


# --------------------------------------------------------------------------- base image


def resolve_base(client: docker.DockerClient, base: str) -> tuple[str, str | None]:
    """(reference, image id or None if it must be built or pulled) for ``base``."""
    if base not in BASE_CHOICES:
        raise ImageBuildError(f"unknown base {base!r}; choose one of {', '.join(BASE_CHOICES)}")
    if base in ("auto", "slim"):
        slim_id = _image_id(client, SLIM_IMAGE)
        if slim_id or base == "slim":
            return SLIM_IMAGE, slim_id
    tag = base_tag()
    return tag, _image_id(client, tag)


def base_image_ensure(
    client: docker.DockerClient, *, base: str = "auto", force: bool = False, say: Say = print
) -> tuple[str, str, bool]:
    """Make the base image available: (reference, image id, built or pulled now)."""
    ref, image_id = resolve_base(client, base)
    if ref == SLIM_IMAGE:
        if image_id:
            say(f"base image {ref} ({image_id[7:19]}) found locally")
            return ref, image_id, False
        say(f"pulling {ref}")
        try:
            image = client.images.pull(SLIM_IMAGE)
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise ImageBuildError(
                f"{ref} is not available locally and cannot be pulled ({exc}); use --base debootstrap "
                f"or load it with `docker load`"
            ) from None
        return ref, image.id, True
    if image_id and not force:
        say(f"base image {ref} ({image_id[7:19]}) found locally")
        return ref, image_id, False
    return ref, _debootstrap_base(client, ref, say), True


def _debootstrap_base(client: docker.DockerClient, tag: str, say: Say) -> str:
    if not shutil.which("debootstrap"):
        raise ImageBuildError(
            f"{SLIM_IMAGE} is not available and debootstrap is not installed; install it with "
            f"`apt-get install debootstrap` (or `docker load` a {SLIM_IMAGE} image)"
        )
    if os.geteuid() != 0:
        raise ImageBuildError("building the Debian base with debootstrap needs root; run this command as root")
    mirror = host_apt_mirror()
    workdir = tempfile.mkdtemp(prefix="bsn-base-")
    rootfs = os.path.join(workdir, "rootfs")
    tarball = os.path.join(workdir, "rootfs.tar")
    try:
        say(f"building base image {tag}: debootstrap {DEBIAN_SUITE} from {mirror} (about a minute)")
        try:
            proc = subprocess.run(
                debootstrap_argv(rootfs, mirror),
                capture_output=True,
                text=True,
                timeout=DEBOOTSTRAP_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ImageBuildError(
                f"debootstrap did not finish within {DEBOOTSTRAP_TIMEOUT}s (mirror {mirror})"
            ) from None
        if proc.returncode != 0:
            log = _read(os.path.join(rootfs, "debootstrap", "debootstrap.log"))
            tail = _tail(log, 4) or _tail(proc.stdout + proc.stderr)
            raise ImageBuildError(f"debootstrap failed (exit {proc.returncode}, mirror {mirror}): {tail}")
        _strip_rootfs(rootfs)
        subprocess.run(
            [
                "tar",
                "--numeric-owner",
                "--xattrs",
                "-C",
                rootfs,
                "--exclude=./dev/*",
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                "--exclude=./run/*",
                "--exclude=./tmp/*",
                "-cf",
                tarball,
                ".",
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
        say(f"importing base image ({os.path.getsize(tarball) // 2**20} MiB tarball)")
        changes = [*IMPORT_CHANGES, f"LABEL {LABEL_IMAGE}=base {LABEL_RECIPE}={base_recipe_hash()}"]
        repo, _, tag_part = tag.partition(":")
        long_client = docker.DockerClient(base_url=settings.BSN_DOCKER_BASE_URL, timeout=BUILD_TIMEOUT)
        try:
            long_client.api.import_image(src=tarball, repository=repo, tag=tag_part, changes=changes)
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise ImageBuildError(f"docker import of the base image failed: {exc}") from None
        finally:
            long_client.close()
    except subprocess.CalledProcessError as exc:
        raise ImageBuildError(
            f"packing the base filesystem failed: {_tail(exc.stderr.decode(errors='replace'))}"
        ) from None
    finally:
        _remove_tree(workdir)
    image_id = _image_id(client, tag)
    if not image_id:
        raise ImageBuildError(f"docker import finished but {tag} does not exist")
    return image_id


def _strip_rootfs(rootfs: str) -> None:
    for rel in STRIP_PATHS:
        path = os.path.join(rootfs, rel)
        if os.path.isdir(path) and not os.path.islink(path):
            for entry in os.listdir(path):
                _remove_tree(os.path.join(path, entry))
    # debootstrap copies the host's resolver and host names; Docker supplies its own.
    for rel in ("etc/resolv.conf", "etc/hostname", "etc/hosts"):
        path = os.path.join(rootfs, rel)
        if os.path.lexists(path):
            os.remove(path)
            open(path, "w").close()


def _mounts_under(path: str) -> list[str]:
    real = os.path.realpath(path)
    mounts = []
    with open("/proc/self/mounts") as f:
        for line in f:
            point = line.split()[1].replace("\\040", " ")
            if point == real or point.startswith(real + "/"):
                mounts.append(point)
    return sorted(mounts, reverse=True)


def _remove_tree(path: str) -> None:
    """rm -rf, but never through a mount point (debootstrap can leave /proc or a /dev bind)."""
    if not os.path.lexists(path):
        return
    for point in _mounts_under(path):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    if _mounts_under(path):
        raise ImageBuildError(f"{path} still has mounts under it; unmount them and remove it by hand")
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


# ------------------------------------------------------------------------- ledger image


def ledger_image_ensure(
    *,
    base: str = "auto",
    force: bool = False,
    client: docker.DockerClient | None = None,
    say: Say = print,
) -> BuildResult:
    """Build (or find) the ledger image for the current sources and point ``latest`` at it."""
    client = client or docker_client()
    files = ledger_context_files(Path(settings.BASE_DIR))
    with build_lock(say):
        base_ref, base_id, base_built = base_image_ensure(client, base=base, force=force, say=say)
        digest = content_hash(files, base_id)
        tag = f"{LEDGER_REPO}:{digest[:12]}"
        image_id = None if force else _image_id(client, tag)
        built = image_id is None
        if built:
            say(f"building {tag} from {base_ref}")
            image_id = _docker_build(files, tag=tag, base_ref=base_ref, base_id=base_id, digest=digest, force=force)
        else:
            say(f"{tag} is up to date (cached)")
        latest = f"{LEDGER_REPO}:latest"
        if _image_id(client, latest) != image_id:
            try:
                client.api.tag(image_id, LEDGER_REPO, "latest", force=True)
            except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                raise ImageBuildError(f"cannot tag {tag} as {latest}: {exc}") from None
            say(f"{latest} -> {tag}")
    return BuildResult(tag=tag, image_id=image_id, base_image=base_ref, built=built, base_built=base_built)


def _docker_build(
    files: list[tuple[str, Path]], *, tag: str, base_ref: str, base_id: str, digest: str, force: bool
) -> str:
    long_client = docker.APIClient(base_url=settings.BSN_DOCKER_BASE_URL, timeout=BUILD_TIMEOUT)
    log: list[str] = []
    image_id = None
    try:
        stream = long_client.build(
            fileobj=io.BytesIO(context_tar(files)),
            custom_context=True,
            tag=tag,
            buildargs={"BASE_IMAGE": base_ref},
            labels={LABEL_IMAGE: "ledger", LABEL_CONTENT_HASH: digest, LABEL_BASE_IMAGE: base_id},
            rm=True,
            forcerm=True,
            pull=False,
            nocache=force,
            decode=True,
        )
        for chunk in stream:
            if "error" in chunk:
                raise ImageBuildError(
                    f"docker build of {tag} failed: {chunk['error'].strip()} (last output: {_tail(''.join(log))})"
                )
            if "stream" in chunk:
                log.append(chunk["stream"])
            image_id = (chunk.get("aux") or {}).get("ID", image_id)
    except (docker.errors.APIError, docker.errors.BuildError, requests.exceptions.RequestException) as exc:
        raise ImageBuildError(f"docker build of {tag} failed: {exc}") from None
    finally:
        long_client.close()
    if not image_id:
        raise ImageBuildError(f"docker build of {tag} reported no image id (last output: {_tail(''.join(log))})")
    return image_id


def ledger_image_status(*, client: docker.DockerClient | None = None) -> dict[str, Any]:
    """What a build would use and whether its result exists; builds nothing."""
    client = client or docker_client()
    files = ledger_context_files(Path(settings.BASE_DIR))
    base_ref, base_id = resolve_base(client, "auto")
    status: dict[str, Any] = {
        "engine": settings.BSN_DOCKER_BASE_URL,
        "base": base_ref,
        "base_id": base_id,
        "tag": None,
        "image_id": None,
        "latest_id": _image_id(client, f"{LEDGER_REPO}:latest"),
    }
    if base_id:
        tag = f"{LEDGER_REPO}:{content_hash(files, base_id)[:12]}"
        status["tag"] = tag
        status["image_id"] = _image_id(client, tag)
    status["up_to_date"] = bool(status["image_id"]) and status["image_id"] == status["latest_id"]
    return status

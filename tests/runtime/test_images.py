"""The ledger image build: pure helpers without an engine, then a real build and run."""

from __future__ import annotations

import http.client
import json
import os
import time
import uuid
from pathlib import Path

import docker
import docker.errors
import pytest
from django.conf import settings
from django.core.management import call_command

from apps.runtime import images
from apps.runtime.images import (
    ImageBuildError,
    apt_mirror,
    content_hash,
    context_tar,
    debootstrap_argv,
    ledger_context_files,
    ledger_image_ensure,
)
from bsn.ledger import auth as node_auth
from tests.ledger.helpers import ADMIN, Key, add_user

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_LABEL = {"io.bsn.test": "1"}

# --------------------------------------------------------------------- pure helpers


def _fake_repo(tmp_path: Path) -> Path:
    (tmp_path / "deploy/ledger").mkdir(parents=True)
    (tmp_path / "deploy/ledger/Dockerfile").write_text("FROM x\n")
    (tmp_path / "bsn/ledger/contracts/__pycache__").mkdir(parents=True)
    (tmp_path / "bsn/__init__.py").write_text("")
    (tmp_path / "bsn/settings.py").write_text("SECRET = 1\n")
    (tmp_path / "bsn/ledger/__init__.py").write_text("")
    (tmp_path / "bsn/ledger/contracts/kv.py").write_text("x = 1\n")
    (tmp_path / "bsn/ledger/contracts/__pycache__/kv.cpython-311.pyc").write_bytes(b"\0")
    return tmp_path


def test_context_holds_only_what_the_dockerfile_needs(tmp_path):
    names = [name for name, _ in ledger_context_files(_fake_repo(tmp_path))]
    assert names == ["Dockerfile", "bsn/__init__.py", "bsn/ledger/__init__.py", "bsn/ledger/contracts/kv.py"]


def test_real_context_is_small_and_has_no_django():
    files = ledger_context_files(REPO_ROOT)
    names = {name for name, _ in files}
    assert "bsn/ledger/__main__.py" in names
    assert not any(n.startswith(("bsn/settings", ".venv", ".data", "apps/")) for n in names)
    assert len(context_tar(files)) < 512 * 1024


def test_content_hash_follows_sources_and_base(tmp_path):
    repo = _fake_repo(tmp_path)
    files = ledger_context_files(repo)
    first = content_hash(files, "sha256:base1")
    assert content_hash(ledger_context_files(repo), "sha256:base1") == first
    assert content_hash(files, "sha256:base2") != first
    (repo / "bsn/ledger/contracts/kv.py").write_text("x = 2\n")
    assert content_hash(files, "sha256:base1") != first
    (repo / "bsn/settings.py").write_text("SECRET = 2\n")  # not in the image: no effect
    assert content_hash(files, "sha256:base1") == content_hash(ledger_context_files(repo), "sha256:base1")


def test_context_tar_is_reproducible(tmp_path):
    repo = _fake_repo(tmp_path)
    first = context_tar(ledger_context_files(repo))
    os.utime(repo / "bsn/ledger/__init__.py", (1, 1))
    assert context_tar(ledger_context_files(repo)) == first


def test_missing_sources_are_a_clear_error(tmp_path):
    with pytest.raises(ImageBuildError, match="ledger sources not found"):
        ledger_context_files(tmp_path)


DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main
"""


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        ([("/etc/apt/sources.list.d/debian.sources", DEB822)], "http://mirror.example/debian"),
        (
            [
                (
                    "/etc/apt/sources.list",
                    "# deb http://old.example/debian bookworm main\n"
                    "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main\n",
                )
            ],
            "http://one.example/debian",
        ),
        (
            [("/etc/apt/sources.list.d/x.sources", "Types: deb\nURIs: http://a/\nSuites: bullseye\nEnabled: yes\n")],
            "http://deb.debian.org/debian",
        ),
        (
            [("/etc/apt/sources.list.d/x.sources", "Types: deb\nURIs: http://a/\nSuites: bookworm\nEnabled: no\n")],
            "http://deb.debian.org/debian",
        ),
        ([], "http://deb.debian.org/debian"),
    ],
)
def test_apt_mirror(sources, expected):
    assert apt_mirror(sources) == expected


def test_debootstrap_argv_names_virtual_dependency_providers():
    argv = debootstrap_argv("/tmp/root", "http://m/debian")
    assert argv[:2] == ["debootstrap", "--variant=minbase"]
    assert "python3-cryptography" in argv[2] and "python3-cffi-backend" in argv[2]
    assert argv[-3:] == ["bookworm", "/tmp/root", "http://m/debian"]


def test_base_tag_follows_the_recipe(monkeypatch):
    tag = images.base_tag()
    assert tag.startswith("bsn/base:bookworm-")
    monkeypatch.setattr(images, "DEBIAN_PACKAGES", (*images.DEBIAN_PACKAGES, "curl"))
    assert images.base_tag() != tag


# ------------------------------------------------------------------ real engine


@pytest.fixture(scope="module")
def client():
    try:
        client = docker.DockerClient(base_url=settings.BSN_DOCKER_BASE_URL, timeout=settings.BSN_DOCKER_TIMEOUT)
        client.ping()
    except docker.errors.DockerException as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Docker engine required in CI: {exc}")
        pytest.skip(f"no Docker engine: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def built(client):
    """The ledger image for the current sources (first build may take a minute)."""
    return ledger_image_ensure(client=client, say=lambda msg: None)


@pytest.mark.docker
def test_second_build_is_cached_and_fast(client, built):
    started = time.monotonic()
    again = ledger_image_ensure(client=client, say=lambda msg: None)
    assert time.monotonic() - started < 2.0
    assert not again.built
    assert again.tag == built.tag
    assert client.images.get("bsn/ledger:latest").id == built.image_id
    labels = client.images.get(built.tag).labels
    assert labels["io.bsn.image"] == "ledger"
    assert built.tag.endswith(labels["io.bsn.content-hash"][:12])


@pytest.mark.docker
def test_command_build_and_status(built, capsys):
    call_command("bsn_images", "build")
    call_command("bsn_images", "status")
    out = capsys.readouterr().out
    assert f"{built.tag} (cached" in out
    assert "latest:  bsn/ledger:latest (current)" in out


@pytest.mark.docker
def test_unknown_base_is_a_clear_error(client):
    with pytest.raises(ImageBuildError, match="unknown base"):
        ledger_image_ensure(client=client, base="alpine", say=lambda msg: None)


def _request(port: int, method: str, path: str, body: object = None, credential: str = "") -> tuple[int, object]:
    """One request, signed with the node's API credential when one is given."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {}
        if credential:
            headers["Authorization"] = node_auth.authorization(credential.encode(), method, path, data)[0]
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _wait_healthy(port: int, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body = _request(port, "GET", "/health")
            if status == 200:
                return body
        except (OSError, http.client.HTTPException, ValueError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError("node did not become healthy")
        time.sleep(0.05)


@pytest.mark.docker
def test_image_runs_hardened_and_keeps_data(client, built):
    name = f"bsn-test-ledger-{uuid.uuid4().hex[:8]}"
    volume = client.volumes.create(name=name, labels=TEST_LABEL)
    container = None
    try:
        container = client.containers.run(
            built.tag,
            name=name,
            detach=True,
            labels=TEST_LABEL,
            environment={"BSN_NODE_ID": "n1", "BSN_APP_ID": "a1", "BSN_ADMIN_PUBLIC_KEY": ADMIN.public},
            read_only=True,
            tmpfs={"/tmp": ""},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            user="10001:10001",
            volumes={volume.name: {"bind": "/data", "mode": "rw"}},
            ports={"8080/tcp": ("127.0.0.1", None)},
            mem_limit="64m",
            pids_limit=64,
        )
        container.reload()
        binding = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]
        assert binding["HostIp"] == "127.0.0.1"
        port = int(binding["HostPort"])

        assert _wait_healthy(port) == {"status": "ok"}  # all a stranger learns
        # Started by hand without BSN_NODE_API_CREDENTIAL_FILE: the node keeps one in its volume.
        code, out = container.exec_run(["cat", "/data/api.credential"])
        assert code == 0
        credential = out.decode().strip()
        health = _request(port, "GET", "/health", credential=credential)[1]
        assert (health["status"], health["node_id"], health["app_id"]) == ("ok", "n1", "a1")
        alice = Key("alice")
        assert _request(port, "POST", "/tx", add_user(alice, app="a1"))[0] == 401
        assert _request(port, "POST", "/tx", add_user(alice, app="a1"), credential)[0] == 200
        put = alice.tx("kv", "put", {"key": "greeting", "value": {"hello": "world"}}, app="a1")
        status, receipt = _request(port, "POST", "/tx", put, credential)
        assert (status, receipt["status"]) == (200, "committed")
        assert _request(port, "GET", "/state/kv/greeting", credential=credential)[1]["value"] == {"hello": "world"}

        # Idle memory goal (docs/benchmarks: <= 20 MiB), measured as `docker stats` does.
        mem = container.stats(stream=False)["memory_stats"]
        stats = mem.get("stats", {})
        used = mem["usage"] - stats.get("cache", stats.get("inactive_file", 0))  # cgroup v1 / v2
        assert used < 20 * 2**20, f"idle node uses {used / 2**20:.1f} MiB"

        started = time.monotonic()
        container.stop(timeout=5)
        assert time.monotonic() - started < 3.0  # SIGTERM handled, not killed after 5 s
        assert container.wait(timeout=5)["StatusCode"] == 0

        container.start()
        container.reload()
        port = int(container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])
        _wait_healthy(port)
        assert _request(port, "GET", "/state/kv/greeting", credential=credential)[1]["value"] == {"hello": "world"}
        assert _request(port, "GET", f"/tx/{receipt['tx_id']}", credential=credential)[1]["receipt"] == receipt
    finally:
        if container is not None:
            container.remove(force=True)
        volume.remove(force=True)

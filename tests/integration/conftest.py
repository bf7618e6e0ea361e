"""Real services for integration tests: a Celery worker subprocess on the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from apps.chainapps.workers import worker_argv
from apps.regions.models import Region
from tests.factories import RegionFactory

ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition, *, timeout: float, interval: float = 0.2, message="condition"):
    """Poll ``condition`` until it returns something truthy; fail with ``message`` on timeout
    (a callable ``message`` is called then, to say what the last poll saw)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    message = message() if callable(message) else message
    pytest.fail(f"timed out after {timeout}s waiting for {message} (last: {last!r})", pytrace=False)


def _database_url() -> str:
    s = connection.settings_dict
    host = s.get("HOST") or ""
    if not host or host.startswith("/"):
        query = f"?host={host}" if host else ""
        auth = f"{s['USER']}@" if s.get("USER") else ""
        return f"postgres://{auth}/{s['NAME']}{query}"
    return f"postgres://{s['USER']}:{s['PASSWORD']}@{host}:{s.get('PORT') or 5432}/{s['NAME']}"


class Worker:
    """A real `celery worker` process on the test database, which a test may kill."""

    def __init__(self, queues: list[str], log_path: Path, env: dict[str, str]):
        self.queues = queues
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self, *, beat: bool = False) -> Worker:
        argv = worker_argv(
            self.queues,
            concurrency=4,
            name=f"test-{uuid.uuid4().hex[:8]}@%h",
            extra=["--without-gossip", "--without-mingle", "--without-heartbeat"],
        )
        if beat:
            argv += ["-B", "--schedule", str(self.log_path.with_suffix(".beat"))]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_for(
            lambda: b"ready." in self.log_path.read_bytes() or self.proc.poll() is not None,
            timeout=30,
            message="the celery worker to be ready",
        )
        if self.proc.poll() is not None:
            pytest.fail(f"celery worker exited: {self.log_path.read_text()[-3000:]}", pytrace=False)
        return self

    def kill(self) -> None:
        """SIGKILL the whole worker process group: no warm shutdown, no acks."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def make_regions(transactional_db):
    """Regions with codes unique to this test, so queues never clash with other runs."""

    def make(driver: str, count: int = 1) -> list[Region]:
        tag = uuid.uuid4().hex[:6]
        return [RegionFactory(code=f"it{tag}-{i}", name=f"test {i}", driver=driver) for i in range(count)]

    return make


@pytest.fixture
def worker_factory(redis_url, tmp_path):
    """Start real Celery workers for given regions; all are stopped at the end of the test."""
    started: list[Worker] = []

    def make(
        regions: list[Region],
        *,
        stale_seconds: int = 120,
        beat: bool = False,
        start: bool = True,
        env: dict[str, str] | None = None,
    ) -> Worker:
        extra = env or {}
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bsn.settings_test",
            "DATABASE_URL": _database_url(),
            "CELERY_BROKER_URL": redis_url,
            "BSN_OPERATION_STALE_SECONDS": str(stale_seconds),
            "BSN_RECONCILE_INTERVAL": "3600",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
        queues = [settings.CELERY_TASK_DEFAULT_QUEUE, *[r.queue for r in regions]]
        worker = Worker(queues, tmp_path / f"worker-{len(started)}.log", env)
        started.append(worker)
        return worker.start(beat=beat) if start else worker

    yield make
    for worker in started:
        worker.stop()


def operation_done(client, op_url: str, timeout: float = 90) -> dict:
    def finished():
        body = client.get(op_url).json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(finished, timeout=timeout, interval=0.25, message=f"operation {op_url} to finish")


@pytest.fixture(autouse=True)
def builtin_framework(transactional_db):
    """transactional_db flushes tables between tests, data-migration rows included."""
    from django.conf import settings

    from apps.chainapps.builtin import ensure_builtin_framework
    from apps.chainapps.models import Framework

    framework = ensure_builtin_framework(Framework)
    # The image this run was built for (BSN_LEDGER_IMAGE, a content-hash tag), not the
    # shared :latest that another checkout's build may move under a running test.
    Framework.objects.filter(pk=framework.pk).update(image=settings.BSN_LEDGER_IMAGE)
    framework.refresh_from_db()
    return framework


TEST_REGION = __import__("re").compile(r"-it[0-9a-f]{6}-\d+(-data|-net)?$")


_installations_seen: set[str] = set()


@pytest.fixture(autouse=True)
def _remember_installation(transactional_db):
    """Each flush makes a new installation id; remember them to clean their objects up.

    After the test (its workers stopped: this fixture is set up first, so torn down last)
    its installation's objects on the default engine go at once: nothing can reach them
    once the database is flushed, and each test's ordering cluster (three etcd members,
    each beating its peers) left running until the session's end made the machine's load
    climb past 70 by the last third of the suite, where tests then timed out."""
    from apps.common.models import installation_id

    seen = {installation_id()}
    yield
    seen.add(installation_id())
    _installations_seen.update(seen)
    _remove_objects_of(seen)


def _remove_objects_of(installations: set[str]) -> None:
    """Best effort: containers, then networks, then volumes labelled with these installations."""
    try:
        import docker
        from django.conf import settings

        engine = docker.DockerClient(base_url=settings.BSN_DOCKER_BASE_URL, timeout=20)
    except Exception:  # noqa: BLE001 - no engine: nothing of ours on it
        return
    try:
        for inst in installations:
            selector = {"label": f"io.bsn.installation={inst}"}
            for kind in ("containers", "networks", "volumes"):
                collection = getattr(engine, kind)
                extra = {"all": True} if kind == "containers" else {}
                found = collection.list(filters=selector, **extra)
                for obj in found:
                    try:
                        if kind == "containers":
                            obj.remove(force=True, v=True)
                        elif kind == "volumes":
                            obj.remove(force=True)
                        else:
                            obj.remove()
                    except Exception:  # noqa: BLE001, S110 - gone meanwhile, or in use: the session's end retries
                        pass
    except Exception:  # noqa: BLE001, S110 - the engine went away (an outage test): the session's end retries
        pass
    finally:
        engine.close()


def _ours(obj) -> bool:
    """Made by this session: its installation's label, or (unlabelled) a test region's name.
    Another session's objects carry their own installation: never touched here."""
    labels = obj.attrs.get("Labels") or obj.attrs.get("Config", {}).get("Labels") or {}
    installation = labels.get("io.bsn.installation")
    if installation:
        return installation in _installations_seen
    return TEST_REGION.search(obj.name) is not None


@pytest.fixture(scope="session", autouse=True)
def leave_nothing_behind():
    """After the session, remove runtime objects that tests (or a failed test) left."""
    yield
    try:
        import docker
        from django.conf import settings

        engine = docker.DockerClient(base_url=settings.BSN_DOCKER_BASE_URL, timeout=20)
        selector = {"label": "io.bsn.managed=true"}
        for container in engine.containers.list(all=True, filters=selector):
            if _ours(container):
                container.remove(force=True, v=True)
        for network in engine.networks.list(filters=selector):
            if _ours(network):
                network.remove()
        for volume in engine.volumes.list(filters=selector):
            if _ours(volume):
                volume.remove(force=True)
    except Exception:  # noqa: BLE001, S110 - best effort; no engine means nothing to clean
        pass
    from django.conf import settings

    root = Path(settings.BSN_PROCESS_DIR)
    for pid_file in root.glob("it*/*/pid"):
        try:
            pid = int(pid_file.read_text().strip())
            if b"bsn.ledger" in Path(f"/proc/{pid}/cmdline").read_bytes():  # never a recycled pid
                os.kill(pid, signal.SIGKILL)
        except (ValueError, OSError):
            pass


def node_request(node, method: str, path: str, body=None, *, timeout: float = 5.0):
    """``method path`` on a node as the control plane calls it (signed with the node's
    credential, reply checked); the ``NodeReply``. Raises ``NodeCallError`` if it cannot."""
    from apps.chainapps.node_auth import node_auth
    from apps.runtime.nodeapi import node_call

    node.refresh_from_db()
    return node_call(
        node.endpoint, method, path, auth=node_auth(node), body=body, connect_timeout=timeout, read_timeout=timeout
    )


def node_get(node, path: str, *, timeout: float = 5.0):
    return node_request(node, "GET", path, timeout=timeout)


def node_post(node, path: str, body, *, timeout: float = 15.0):
    return node_request(node, "POST", path, body, timeout=timeout)


def _secret_values() -> set[str]:
    """Every secret the control plane holds for nodes and the ordering service, in clear."""
    from apps.chainapps.models import LedgerNode
    from apps.common.crypto import decrypt_secret
    from apps.ordering.models import AppOrderingCredential, OrderingCluster

    values: set[str] = set()
    for key, credential in LedgerNode.objects.values_list("private_key_encrypted", "api_credential_encrypted"):
        values |= {decrypt_secret(v) for v in (key, credential) if v}
    values |= {decrypt_secret(v) for v in AppOrderingCredential.objects.values_list("password_encrypted", flat=True)}
    values |= {decrypt_secret(v) for v in OrderingCluster.objects.values_list("root_password_encrypted", flat=True)}
    return values


def assert_no_secret_in_any_environment(engine=None) -> int:
    """Inspect every container this installation manages (``docker inspect`` Config.Env)
    and every node process (``/proc/<pid>/environ``): no secret value in any of them.
    Returns how many environments were inspected."""
    from django.conf import settings

    from apps.common.models import installation_id

    secrets = _secret_values()
    assert secrets, "nothing to look for"
    environments: dict[str, str] = {}
    if engine is not None:
        selector = {"label": f"io.bsn.installation={installation_id()}"}
        for container in engine.containers.list(all=True, filters=selector):
            environments[f"container {container.name}"] = "\n".join(container.attrs["Config"]["Env"] or [])
    for record in Path(settings.BSN_PROCESS_DIR).glob("*/*/process.json"):
        import json

        pid = json.loads(record.read_text())["pid"]
        labels = json.loads((record.parent / "labels.json").read_text())
        environ = Path(f"/proc/{pid}/environ")
        if labels.get("io.bsn.installation") == installation_id() and environ.exists():
            environments[f"process {pid} ({record.parent.name})"] = environ.read_bytes().decode(errors="replace")
    assert environments, "no managed container or process to inspect"
    for where, env in environments.items():
        leaked = [s[:6] + "…" for s in secrets if s in env]
        assert not leaked, f"{where} has secrets in its environment: {leaked}"
    return len(environments)

"""Pure builders: node spec, container/network/volume kwargs, error classification, factory."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import docker.errors
import pytest
import requests

from apps.regions.engine_tls import EngineTLS
from apps.runtime import drivers, nodeapi
from apps.runtime.base import PermanentRuntimeError, RuntimeUnavailable, TransientRuntimeError
from apps.runtime.docker import classify_error as classify
from apps.runtime.docker import (
    container_create_kwargs,
    endpoint_from_attrs,
    network_create_kwargs,
    status_from_summary,
    volume_create_kwargs,
)
from apps.runtime.spec import (
    LABEL_APP,
    LABEL_GENERATION,
    LABEL_INSTALLATION,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_TENANT,
    build_node_spec,
)
from tests.engines import make_tls

INSTALLATION = "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"
APP = "11111111-2222-3333-4444-555555555555"


def spec(**overrides):
    values = {
        "installation_id": INSTALLATION,
        "tenant_id": "tenant-1",
        "app_id": APP,
        "node_id": "node-1",
        "region_code": "cn-beijing",
        "generation": 3,
        "image": "bsn/ledger:latest",
        "command": None,
        "port": 7000,
        "health_path": "/health",
        "publish_host": "127.0.0.1",
        "mem_limit_mb": 96,
        "cpus": 0.25,
        "pids_limit": 50,
    }
    values.update(overrides)
    return build_node_spec(**values)


# -- build_node_spec


def test_names_are_deterministic_and_engine_safe():
    a, b = spec(), spec(node_id="other", generation=9)
    assert a.name == b.name == "bsn-0f1e2d3c-111111112222-cn-beijing"
    assert a.network == b.network
    assert a.volume == f"{a.name}-data"
    assert spec(region_code="cn-shanghai").name != a.name
    assert spec(installation_id="ffffffff-0000").name != a.name
    for name in (a.name, a.network, a.volume):
        assert all(ch.isalnum() or ch in "-_." for ch in name)


def test_labels_carry_ownership_and_generation():
    s = spec()
    assert s.labels[LABEL_MANAGED] == "true"
    assert s.labels[LABEL_INSTALLATION] == INSTALLATION
    assert s.labels[LABEL_TENANT] == "tenant-1"
    assert s.labels[LABEL_APP] == APP
    assert s.labels[LABEL_NODE] == "node-1"
    assert s.labels[LABEL_GENERATION] == "3"
    assert LABEL_NODE not in s.app_labels and LABEL_GENERATION not in s.app_labels
    assert s.app_labels[LABEL_INSTALLATION] == INSTALLATION


def test_env_points_the_node_at_its_port_and_data_and_extra_env_is_kept():
    s = spec(env={"BSN_CONTRACT": "kv"})
    assert s.env["BSN_LEDGER_PORT"] == "7000"
    assert s.env["BSN_LEDGER_DATA"] == "/data"
    assert s.env["BSN_NODE_ID"] == "node-1"
    assert s.env["BSN_CONTRACT"] == "kv"


# -- container_create_kwargs


def test_container_is_hardened():
    kw = container_create_kwargs(spec())
    assert kw["user"] == "10001:10001"
    assert kw["read_only"] is True
    assert kw["cap_drop"] == ["ALL"]
    assert "cap_add" not in kw
    assert kw["security_opt"] == ["no-new-privileges:true"]
    assert kw["privileged"] is False
    assert kw["init"] is True
    assert kw["mem_limit"] == "96m"
    assert kw["memswap_limit"] == "96m"
    assert kw["nano_cpus"] == 250_000_000
    assert kw["pids_limit"] == 50
    assert kw["tmpfs"] == {"/tmp": "rw,noexec,nosuid,size=16m"}
    assert kw["restart_policy"]["Name"] == "on-failure"
    assert kw["restart_policy"]["MaximumRetryCount"] > 0
    assert kw["log_config"]["config"]["max-size"]


def test_port_is_published_on_the_region_host_only_with_a_random_host_port():
    assert container_create_kwargs(spec())["ports"] == {"7000/tcp": ("127.0.0.1", None)}
    assert container_create_kwargs(spec(publish_host="10.1.2.3"))["ports"] == {"7000/tcp": ("10.1.2.3", None)}


def test_only_the_nodes_own_volume_is_mounted_and_never_the_docker_socket():
    s = spec()
    kw = container_create_kwargs(s)
    assert kw["volumes"] == {s.volume: {"bind": "/data", "mode": "rw"}}
    assert not any("docker.sock" in str(k) or "docker.sock" in str(v) for k, v in kw["volumes"].items())
    assert "mounts" not in kw and "devices" not in kw
    assert kw["network"] == s.network
    assert kw.get("network_mode") is None and kw.get("pid_mode") is None and kw.get("ipc_mode") is None
    assert container_create_kwargs(s, network="abc123")["network"] == "abc123"


def test_name_image_command_env_labels_come_from_the_spec():
    s = spec(command=["python3", "-m", "bsn.ledger"], env={"X": "1"})
    kw = container_create_kwargs(s)
    assert kw["name"] == s.name
    assert kw["image"] == "bsn/ledger:latest"
    assert kw["command"] == ["python3", "-m", "bsn.ledger"]
    assert kw["environment"]["X"] == "1"
    assert kw["labels"] == s.labels
    assert container_create_kwargs(spec())["command"] is None  # the image's own CMD


def test_network_and_volume_kwargs_are_labelled():
    s = spec()
    net = network_create_kwargs(s)
    assert net["name"] == s.network and net["driver"] == "bridge"
    assert net["labels"] == s.app_labels
    vol = volume_create_kwargs(s)
    assert vol["name"] == s.volume
    assert vol["labels"][LABEL_INSTALLATION] == INSTALLATION
    assert vol["labels"][LABEL_NODE] == "node-1"
    assert LABEL_GENERATION not in vol["labels"]  # data outlives generations


def test_spec_changes_do_not_leak_between_kwargs():
    s = spec()
    kw = container_create_kwargs(s)
    kw["labels"]["x"] = "y"
    kw["environment"]["x"] = "y"
    assert "x" not in s.labels and "x" not in s.env


def test_endpoint_is_read_back_from_the_port_bindings():
    attrs = {"NetworkSettings": {"Ports": {"7000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"}]}}}
    assert endpoint_from_attrs(attrs, 7000, "127.0.0.1") == "http://127.0.0.1:49153"
    assert endpoint_from_attrs({"NetworkSettings": {"Ports": {}}}, 7000, "127.0.0.1") is None
    v6 = {"NetworkSettings": {"Ports": {"7000/tcp": [{"HostIp": "::1", "HostPort": "5"}]}}}
    assert endpoint_from_attrs(v6, 7000, "::1") == "http://[::1]:5"


def _summary(state="running", ports=None, **extra):
    """An entry of the engine's container list (GET /containers/json), as the engine sends it."""
    return {
        "Id": "c0ffee",
        "Names": ["/bsn-abc-def-cn-beijing"],
        "State": state,
        "Status": "Up 3 minutes",
        "Ports": [{"IP": "127.0.0.1", "PrivatePort": 8080, "PublicPort": 49153, "Type": "tcp"}]
        if ports is None
        else ports,
        "Labels": {LABEL_MANAGED: "true", LABEL_NODE: "n1"},
        **extra,
    }


def test_a_listed_container_gives_the_status_an_inspect_gave():
    """One list request observes a region (no inspect per container): name, state, id,
    endpoint (only while running) and labels come from the list entry."""
    status = status_from_summary(_summary())
    assert (status.name, status.state, status.runtime_id) == ("bsn-abc-def-cn-beijing", "running", "c0ffee")
    assert status.endpoint == "http://127.0.0.1:49153"
    assert status.labels == {LABEL_MANAGED: "true", LABEL_NODE: "n1"}
    for engine_state, ours in [("exited", "stopped"), ("created", "stopped"), ("dead", "stopped"),
                               ("paused", "stopped"), ("restarting", "unknown"), ("removing", "unknown"),
                               ("something new", "unknown")]:  # fmt: skip
        seen = status_from_summary(_summary(engine_state))
        assert (seen.state, seen.endpoint) == (ours, None), engine_state


def test_the_listed_endpoint_is_the_first_published_tcp_port_ipv4_first():
    ports = [
        {"PrivatePort": 9000, "Type": "tcp"},  # exposed, not published
        {"IP": "127.0.0.1", "PrivatePort": 8080, "PublicPort": 40000, "Type": "udp"},
        {"IP": "::", "PrivatePort": 8080, "PublicPort": 40002, "Type": "tcp"},
        {"IP": "0.0.0.0", "PrivatePort": 8080, "PublicPort": 40001, "Type": "tcp"},
    ]
    assert status_from_summary(_summary(ports=ports)).endpoint == "http://0.0.0.0:40001"
    assert status_from_summary(_summary(ports=ports[:1])).endpoint is None
    assert status_from_summary(_summary(ports=[{"PrivatePort": 8080, "PublicPort": 5, "Type": "tcp"}])).endpoint == (
        "http://127.0.0.1:5"
    )
    v6 = [{"IP": "::1", "PrivatePort": 8080, "PublicPort": 5, "Type": "tcp"}]
    assert status_from_summary(_summary(ports=v6)).endpoint == "http://[::1]:5"


def test_frozen_spec_can_be_replaced_for_a_new_generation():
    s = spec()
    s2 = replace(s, labels={**s.labels, LABEL_GENERATION: "4"})
    assert container_create_kwargs(s2)["labels"][LABEL_GENERATION] == "4"


# -- error classification


def _api_error(code: int, cls=docker.errors.APIError, explanation="boom"):
    response = requests.Response()
    response.status_code = code
    return cls("boom", response=response, explanation=explanation)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (requests.exceptions.ConnectionError("refused"), RuntimeUnavailable),
        (requests.exceptions.ConnectTimeout("slow"), RuntimeUnavailable),
        (requests.exceptions.ReadTimeout("slow"), TransientRuntimeError),
        (docker.errors.DockerException("Error while fetching server API version: x"), RuntimeUnavailable),
        (_api_error(404, docker.errors.ImageNotFound), PermanentRuntimeError),
        (_api_error(404, docker.errors.NotFound), TransientRuntimeError),
        (_api_error(409), TransientRuntimeError),
        (_api_error(500), TransientRuntimeError),
        (_api_error(503), TransientRuntimeError),
        (_api_error(400), PermanentRuntimeError),
        (_api_error(403), PermanentRuntimeError),
        (_api_error(400, explanation="network x is ambiguous (2 matches found on name)"), TransientRuntimeError),
        (docker.errors.TLSParameterError("bad"), PermanentRuntimeError),
    ],
)
def test_errors_are_classified(exc, expected):
    result = classify(exc)
    assert type(result) is expected


def test_timeout_message_says_state_is_unknown_and_is_not_unavailable():
    result = classify(requests.exceptions.ReadTimeout("read timed out"), base_url="unix:///x", timeout=30)
    assert not isinstance(result, RuntimeUnavailable)
    assert "unknown" in str(result)


def test_missing_image_tells_how_to_build_it():
    assert "bsn_images build" in str(classify(_api_error(404, docker.errors.ImageNotFound)))


def test_cause_chain_is_followed():
    try:
        try:
            raise requests.exceptions.ConnectionError("refused")
        except requests.exceptions.ConnectionError as inner:
            raise docker.errors.DockerException("wrapped") from inner
    except docker.errors.DockerException as outer:
        assert isinstance(classify(outer), RuntimeUnavailable)


# -- driver factory


def region(**overrides):
    values = {
        "code": "cn-test",
        "driver": "docker",
        "docker_base_url": "",
    }
    tls = overrides.pop("tls", None)
    values.update(overrides)
    return SimpleNamespace(**values, tls=lambda: tls)


@pytest.fixture
def clean_driver_cache():
    drivers.clear_driver_cache()
    yield
    drivers.clear_driver_cache()


def test_factory_builds_and_caches_drivers_per_region(settings, tmp_path, clean_driver_cache):
    settings.BSN_DOCKER_BASE_URL = "unix:///nonexistent/docker.sock"
    settings.BSN_PROCESS_DIR = tmp_path
    d1 = drivers.driver_for_region(region())
    assert d1.name == "docker" and d1.base_url == "unix:///nonexistent/docker.sock"
    assert drivers.driver_for_region(region()) is d1
    material = make_tls()
    tls = EngineTLS(ca=material.ca, cert=material.client_cert, key=material.client_key)
    d2 = drivers.driver_for_region(region(docker_base_url="tcp://10.0.0.9:2376", tls=tls))
    assert d2 is not d1 and d2.base_url == "tcp://10.0.0.9:2376"
    ca, (cert, key) = d2.tls.ca_cert, d2.tls.cert
    assert Path(key).read_text() == tls.key and Path(ca).read_text() == tls.ca and Path(cert).read_text() == tls.cert
    assert all(Path(f).stat().st_mode & 0o077 == 0 for f in (ca, cert, key))  # this user only
    assert d2.tls.verify == ca
    p = drivers.driver_for_region(region(driver="process", code="cn-local"))
    assert p.name == "process" and p.root_dir == tmp_path / "cn-local"


def test_factory_rejects_unknown_driver_and_engines_over_the_network_without_tls(clean_driver_cache, settings):
    with pytest.raises(PermanentRuntimeError):
        drivers.driver_for_region(region(driver="kubernetes"))
    settings.BSN_ALLOW_INSECURE_ENGINES = False
    with pytest.raises(PermanentRuntimeError, match=r"over the network.*BSN_ALLOW_INSECURE_ENGINES"):
        drivers.driver_for_region(region(docker_base_url="tcp://10.0.0.9:2375"))
    settings.BSN_ALLOW_INSECURE_ENGINES = True  # development only
    assert drivers.driver_for_region(region(docker_base_url="tcp://10.0.0.9:2375")).tls is None


def test_docker_engine_answers_is_false_for_nothing_there(tmp_path):
    assert drivers.docker_engine_answers(f"unix://{tmp_path}/no.sock") is False


def test_secrets_are_named_in_the_environment_and_travel_as_files_only():
    import io
    import tarfile

    from apps.runtime.docker import secrets_archive

    s = spec(secrets={"BSN_NODE_PRIVATE_KEY": "k3y", "BSN_ETCD_PASSWORD": "pw"})
    assert "k3y" not in repr(s) and "pw" not in repr(s)
    env = container_create_kwargs(s)["environment"]
    assert env["BSN_NODE_PRIVATE_KEY_FILE"] == "/data/.secrets/bsn_node_private_key"
    assert env["BSN_ETCD_PASSWORD_FILE"] == "/data/.secrets/bsn_etcd_password"
    assert "k3y" not in str(env) and "pw" not in str(env.values())
    with tarfile.open(fileobj=io.BytesIO(secrets_archive(s))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert (members[".secrets"].mode, members[".secrets"].uid) == (0o700, 10001)
        key = members[".secrets/bsn_node_private_key"]
        assert (key.mode, key.uid, key.gid) == (0o400, 10001, 10001)
        assert tar.extractfile(key).read() == b"k3y"


# -- warm nodes (docs/provisioning.md, "Warm nodes")


def _warm(**overrides):
    from apps.runtime.spec import build_warm_spec

    values = {
        "installation_id": INSTALLATION,
        "warm_id": "99999999-8888-7777-6666-555555555555",
        "region_code": "cn-beijing",
        "image": "bsn/ledger:latest",
        "command": None,
        "port": 7000,
        "health_path": "/health",
        "publish_host": "127.0.0.1",
        "mem_limit_mb": 96,
        "cpus": 0.25,
        "pids_limit": 50,
        "host_port": 20001,
        "claim_key": "a-claim-key",
    }
    values.update(overrides)
    return build_warm_spec(**values)


def test_a_warm_node_is_labelled_for_no_app_and_waits_for_its_claim():
    from apps.runtime.spec import CLAIM_FILE, LABEL_ROLE, LABEL_WARM

    w = _warm()
    assert w.name == "bsn-0f1e2d3c-w99999999888-cn-beijing"
    assert (w.network, w.volume) == (f"{w.name}-net", f"{w.name}-data")
    assert w.labels[LABEL_WARM] == w.warm == "99999999-8888-7777-6666-555555555555"
    assert w.labels[LABEL_ROLE] == "ledger" and w.labels[LABEL_GENERATION] == "1"
    assert not {LABEL_APP, LABEL_NODE, LABEL_TENANT} & (set(w.labels) | set(w.app_labels))
    assert w.env["BSN_CLAIM_FILE"] == CLAIM_FILE
    # Its one secret: the key its claim is sealed with, a file (never in the container's config).
    assert w.secrets == {"BSN_CLAIM_KEY": "a-claim-key"} and w.claim_key == "a-claim-key"
    kwargs = container_create_kwargs(w)
    assert kwargs["environment"]["BSN_CLAIM_KEY_FILE"] == "/data/.secrets/bsn_claim_key"
    assert "a-claim-key" not in json.dumps(kwargs) and "a-claim-key" not in repr(w)
    assert "BSN_APP_ID" not in w.env and "BSN_NODE_ID" not in w.env
    # The same hardening as a node made for an app.
    kwargs = container_create_kwargs(w)
    assert kwargs["read_only"] and kwargs["cap_drop"] == ["ALL"] and kwargs["user"] == "10001:10001"
    assert kwargs["ports"] == {"7000/tcp": ("127.0.0.1", 20001)}
    assert volume_create_kwargs(w)["labels"][LABEL_WARM] == w.warm


def test_a_claimed_node_keeps_the_warm_nodes_name_and_is_known_by_its_id():
    from apps.runtime.docker import same_node
    from apps.runtime.spec import LABEL_WARM

    w = _warm()
    claimed = spec(generation=1, name=w.name, warm=w.warm)
    assert (claimed.name, claimed.network, claimed.volume) == (w.name, w.network, w.volume)
    assert claimed.labels[LABEL_WARM] == w.warm and claimed.labels[LABEL_NODE] == "node-1"
    assert same_node(w.labels, claimed)  # the warm container is the node's
    assert same_node(claimed.labels, claimed)  # and so is one made anew for it
    assert not same_node(_warm(warm_id="another").labels, claimed)
    assert not same_node(w.labels, spec())  # a node not claimed from it
    assert not same_node(claimed.labels, spec(node_id="node-2", name=w.name))


def test_the_claim_is_written_last_with_the_nodes_settings_and_secret_paths():
    import io
    import json
    import tarfile

    from apps.runtime.docker import secrets_archive

    claimed = spec(generation=1, warm="w-1", secrets={"BSN_NODE_PRIVATE_KEY": "k"})
    with tarfile.open(fileobj=io.BytesIO(secrets_archive(claimed, claim=True))) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [".secrets", ".secrets/bsn_node_private_key", ".secrets/claim.json"]
        settings = json.loads(tar.extractfile(members[-1]).read())
    assert settings["BSN_NODE_ID"] == "node-1" and settings["BSN_APP_ID"] == APP
    assert settings["BSN_NODE_PRIVATE_KEY_FILE"] == "/data/.secrets/bsn_node_private_key"
    assert "k" not in settings.values()  # the secret itself is only in its file
    assert members[-1].mode == 0o600 and members[1].mode == 0o400


# -- a warm node's claim over HTTP (no engine: the container is read as inspected)


@pytest.mark.parametrize(
    ("answers", "taken", "tries"),
    [
        ([200], True, 1),
        ([nodeapi.NodeUnreachable("reset"), 200], True, 2),  # a reset before an answer: once more
        ([nodeapi.NodeUnreachable("reset"), 409], True, 2),  # the first was taken, its answer lost
        ([nodeapi.NodeUnreachable("reset"), nodeapi.NodeUnreachable("reset")], False, 2),
        ([nodeapi.NodeTimeout("slow")], False, 1),  # taken or not is unknown: the copy decides
        ([403], False, 1),
        ([404], False, 1),  # a node serving already (restarted): its claim is copied in
    ],
)
def test_a_claim_over_http_is_tried_again_once_after_a_reset(monkeypatch, answers, taken, tries):
    import base64

    from apps.runtime import docker as docker_driver

    sent = []

    def exchange(endpoint, host, port, method, path, data, headers, timeouts):
        sent.append(endpoint)
        answer = answers[len(sent) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer, b"{}", None

    monkeypatch.setattr(nodeapi, "_exchange", exchange)
    monkeypatch.setattr(nodeapi, "CLAIM_RETRY_S", 0)
    container = SimpleNamespace(
        status="running",
        attrs={"NetworkSettings": {"Ports": {"7000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "20001"}]}}},
    )
    key = base64.urlsafe_b64encode(bytes(32)).decode()
    warm = spec(warm="w1", claim_key=key, secrets={"BSN_NODE_PRIVATE_KEY": "k"})
    assert docker_driver.DockerDriver._claim_over_http(warm, container) is taken
    assert sent == ["http://127.0.0.1:20001"] * tries

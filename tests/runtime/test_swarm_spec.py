"""The Swarm driver's pure builders (apps/runtime/swarm.py), without an engine."""

from __future__ import annotations

import json
import uuid

import pytest

from apps.ordering.spec import build_member_spec
from apps.runtime.spec import build_node_spec
from apps.runtime.swarm import (
    NODE_LABEL_PUBLISH_HOST,
    _tmpfs_size,
    choose_host,
    host_away,
    node_host,
    overlay_create_kwargs,
    pinned_host,
    placement_constraints,
    port_conflict,
    secret_name,
    service_create_kwargs,
    status_from_service,
    sticky_endpoint,
)


def _spec(**overrides):
    values = {
        "installation_id": uuid.uuid4().hex,
        "tenant_id": uuid.uuid4().hex,
        "app_id": uuid.uuid4().hex,
        "node_id": uuid.uuid4().hex,
        "region_code": "cn-chengdu-swarm-with-a-long-code",
        "generation": 3,
        "image": "bsn/ledger:latest",
        "command": None,
        "port": 7000,
        "health_path": "/health",
        "publish_host": "10.0.0.5",
        "mem_limit_mb": 64,
        "cpus": 0.5,
        "pids_limit": 64,
        "secrets": {"BSN_NODE_PRIVATE_KEY": "private-key-value", "BSN_NODE_API_CREDENTIAL": "credential-value"},
        "host_port": 20001,
    }
    values.update(overrides)
    return build_node_spec(**values)


def _kwargs(spec, **overrides):
    values = {
        "network_id": "net1",
        "secrets": {
            "BSN_NODE_PRIVATE_KEY": ("id1", "bsn-s-1"),
            "BSN_NODE_API_CREDENTIAL": ("id2", "bsn-s-2"),
        },
        "constraints": placement_constraints("cn-x", "0123456789ab"),
        "image": "sha256:" + "a" * 64,
    }
    values.update(overrides)
    return service_create_kwargs(spec, **values)


def test_the_service_carries_no_secret_value_only_files_named_in_the_environment():
    spec = _spec()
    kwargs = _kwargs(spec)
    text = json.dumps(kwargs)
    assert "private-key-value" not in text and "credential-value" not in text
    container = kwargs["task_template"]["ContainerSpec"]
    env = dict(line.split("=", 1) for line in container["Env"])
    assert env["BSN_NODE_PRIVATE_KEY_FILE"] == "/run/secrets/bsn_node_private_key"
    assert env["BSN_NODE_API_CREDENTIAL_FILE"] == "/run/secrets/bsn_node_api_credential"
    files = {s["File"]["Name"]: s for s in container["Secrets"]}
    assert set(files) == {"bsn_node_private_key", "bsn_node_api_credential"}
    assert all(s["File"] == {**s["File"], "UID": "10001", "GID": "10001", "Mode": 0o400} for s in files.values())


def test_the_service_is_hardened_like_a_container():
    kwargs = _kwargs(_spec())
    task = kwargs["task_template"]
    container = task["ContainerSpec"]
    assert container["User"] == "10001:10001" and container["ReadOnly"] is True and container["Init"] is True
    assert container["CapabilityDrop"] == ["ALL"]
    assert "Privileges" not in container  # API < 1.46: the hosts' daemon sets no-new-privileges
    assert task["Resources"]["Limits"] == {"MemoryBytes": 64 * 1024 * 1024, "NanoCPUs": 500_000_000, "Pids": 64}
    mounts = {m["Target"]: m for m in container["Mounts"]}
    assert set(mounts) == {"/data", "/tmp"}
    assert mounts["/data"]["Type"] == "volume" and mounts["/tmp"]["TmpfsOptions"]["SizeBytes"] == 16 * 1024 * 1024
    assert task["RestartPolicy"]["Condition"] == "on-failure" and task["RestartPolicy"]["MaxAttempts"] == 3
    assert kwargs["mode"] == {"Replicated": {"Replicas": 1}}
    assert kwargs["update_config"]["Parallelism"] == 1 and kwargs["update_config"]["FailureAction"] == "rollback"
    assert kwargs["update_config"]["Order"] == "stop-first"  # the new task needs the same port and volume
    assert container["Healthcheck"]["Test"][0] == "CMD"
    privileged = _kwargs(_spec(), no_new_privileges=True)["task_template"]["ContainerSpec"]
    assert privileged["Privileges"] == {"NoNewPrivileges": True}


def test_ports_are_published_on_the_host_sticky_or_on_the_mesh():
    ports = _kwargs(_spec())["endpoint_spec"]["Ports"]
    assert ports == [{"Protocol": "tcp", "TargetPort": 7000, "PublishMode": "host", "PublishedPort": 20001}]
    mesh = _kwargs(_spec(), publish_mode="ingress")["endpoint_spec"]["Ports"]
    assert mesh[0]["PublishMode"] == "ingress"
    assert "PublishedPort" not in _kwargs(_spec(host_port=None))["endpoint_spec"]["Ports"][0]


def test_placement_is_the_regions_hosts_holding_the_image():
    assert placement_constraints("cn-x", "0123456789ab") == [
        "node.labels.io.bsn.region.cn-x==true",
        "node.labels.io.bsn.image.0123456789ab==true",
    ]


def test_secret_names_fit_swarm_and_change_with_the_value():
    spec = _spec()
    name = secret_name(spec, "BSN_NODE_API_CREDENTIAL", "a")
    assert len(name) <= 64
    assert name == secret_name(spec, "BSN_NODE_API_CREDENTIAL", "a")
    assert name != secret_name(spec, "BSN_NODE_API_CREDENTIAL", "b")
    assert name != secret_name(_spec(), "BSN_NODE_API_CREDENTIAL", "a")  # another node


def test_the_overlay_network_is_encrypted_and_labelled():
    spec = _spec()
    kwargs = overlay_create_kwargs(spec)
    assert kwargs["driver"] == "overlay" and kwargs["options"] == {"encrypted": ""}
    assert overlay_create_kwargs(spec, encrypted=False)["options"] == {}  # a region with IPsec off
    assert kwargs["labels"] == spec.app_labels and kwargs["attachable"] is False


def _service(replicas=1, ports=None):
    return {
        "ID": "svc",
        "Spec": {
            "Name": "bsn-node",
            "Labels": {"io.bsn.generation": "1"},
            "Mode": {"Replicated": {"Replicas": replicas}},
            "TaskTemplate": {"ContainerSpec": {"Labels": {"io.bsn.generation": "1"}}},
        },
        "Endpoint": {"Ports": ports or []},
    }


def _task(state, desired="running", index=1, port=20001, node="n1"):
    return {
        "ID": f"task{index}",
        "NodeID": node,
        "DesiredState": desired,
        "Version": {"Index": index},
        "Status": {
            "State": state,
            "ContainerStatus": {"ContainerID": f"c{index}"},
            "PortStatus": {"Ports": [{"Protocol": "tcp", "PublishedPort": port}] if port else []},
        },
    }


@pytest.mark.parametrize(
    ("replicas", "tasks", "state", "runtime_id", "endpoint"),
    [
        (1, [_task("running")], "running", "c1", "http://10.0.0.7:20001"),
        (1, [_task("running", port=None)], "unknown", "svc", None),  # no port: not reachable yet
        (1, [_task("starting")], "unknown", "svc", None),  # started or failing: only its host knows
        (1, [_task("failed", desired="shutdown"), _task("pending", index=2)], "unknown", "svc", None),  # restarting
        (1, [_task("failed", desired="shutdown")], "stopped", "svc", None),  # Swarm gave up
        (1, [], "unknown", "svc", None),  # not scheduled yet
        (0, [_task("shutdown", desired="shutdown")], "stopped", "svc", None),
        (0, [], "stopped", "svc", None),
    ],
)
def test_status_from_the_service_and_its_tasks(replicas, tasks, state, runtime_id, endpoint):
    status = status_from_service(_service(replicas), tasks, {"n1": "10.0.0.7"})
    assert (status.name, status.state, status.runtime_id, status.endpoint) == (
        "bsn-node",
        state,
        runtime_id,
        endpoint,
    )


def test_a_mesh_published_port_is_reached_on_the_tasks_host():
    service = _service(ports=[{"Protocol": "tcp", "PublishedPort": 30001, "PublishMode": "ingress"}])
    status = status_from_service(service, [_task("running", port=None)], {"n1": "10.0.0.7"})
    assert status.endpoint == "http://10.0.0.7:30001"
    # A starting task on a host-mode port: the port its service asks for, once its host confirms.
    sticky = {"Spec": {"EndpointSpec": {"Ports": [{"PublishMode": "host", "PublishedPort": 20005}]}}}
    assert sticky_endpoint(sticky, _task("starting"), {"n1": "10.0.0.7"}) == "http://10.0.0.7:20005"


def test_a_hosts_address_is_its_label_else_its_swarm_address():
    labelled = {"Spec": {"Labels": {NODE_LABEL_PUBLISH_HOST: "192.0.2.9"}}, "Status": {"Addr": "127.0.0.1"}}
    assert node_host(labelled) == "192.0.2.9"
    assert node_host({"Spec": {}, "Status": {"Addr": "10.1.1.1"}}) == "10.1.1.1"


def test_port_conflicts_and_tmpfs_sizes_are_read():
    assert port_conflict("host-mode port already in use on 1 node")
    assert port_conflict("Bind for 0.0.0.0:20001 failed: port is already allocated")
    assert not port_conflict("no suitable node")
    assert _tmpfs_size("rw,noexec,nosuid,size=16m") == 16 * 1024 * 1024
    assert _tmpfs_size("rw") == 16 * 1024 * 1024


def _member_spec(index: int = 0):
    names = [f"bsn-x-etcd-{i}" for i in range(3)]
    return build_member_spec(
        installation_id="i" * 32, index=index, members=names, token="t", image="bsn/ledger", publish_host="10.0.0.5"
    )


def test_an_ordering_member_is_a_service_without_health_check_on_dns_round_robin_in_host_mode():
    spec = _member_spec()
    pin = [*placement_constraints("cn-x", None), "node.id==n2"]
    kwargs = _kwargs(spec, secrets={}, constraints=pin, publish_mode="ingress", platform=True)
    container = kwargs["task_template"]["ContainerSpec"]
    assert container["Healthcheck"] == {"Test": ["NONE"]}  # no quorum is no reason to kill a member
    assert kwargs["endpoint_spec"]["Mode"] == "dnsrr"  # its name is its task's address, which etcd binds
    assert {p["PublishMode"] for p in kwargs["endpoint_spec"]["Ports"]} == {"host"}  # the mesh needs a VIP
    assert container["User"] == "10001:10001" and container["ReadOnly"] and container["CapabilityDrop"] == ["ALL"]
    mount = container["Mounts"][0]
    assert mount["VolumeOptions"]["Labels"]["io.bsn.role"] == "ordering-data"
    assert pinned_host({"Spec": {"TaskTemplate": kwargs["task_template"]}}) == "n2"
    # A node is unchanged: health-checked, behind a VIP.
    node = _kwargs(_spec())
    assert node["endpoint_spec"]["Mode"] == "vip" and node["task_template"]["ContainerSpec"]["Healthcheck"]["Test"][0]
    assert pinned_host({"Spec": {"TaskTemplate": node["task_template"]}}) is None


def test_members_spread_over_distinct_hosts_and_find_their_volume_again():
    hosts = ["a", "b", "c"]
    pinned: list[str] = []
    for _ in range(3):
        pinned.append(choose_host(hosts, pinned, set()))
    assert pinned == ["a", "b", "c"]  # three hosts: one member each, losing a host loses one
    assert sorted(choose_host(["a", "b"], p, set()) for p in ([], ["a"])) == ["a", "b"]
    assert choose_host(["a", "b"], ["a", "b"], set()) == "a"  # two hosts: the third goes to the first
    assert choose_host(hosts, ["a", "b", "c", "c"], {"c"}) == "c"  # its data is there
    assert choose_host(hosts, [], {"elsewhere"}) == "a"  # on a host no longer in the region: a new member
    assert choose_host([], [], set()) is None


def test_a_pinned_services_host_that_takes_no_task_is_named_with_the_reason():
    from apps.common.incidents import runtime_reason
    from apps.runtime.base import HostUnavailable

    def host(availability="active", state="ready"):
        return {
            "ID": "h1" + "0" * 20,
            "Description": {"Hostname": "sw-a"},
            "Spec": {"Availability": availability},
            "Status": {"State": state},
        }

    hid = host()["ID"]
    assert host_away(hid, [host()]) == ""
    assert host_away(None, [host("drain")]) == ""  # not pinned: Swarm places it anywhere
    assert host_away(hid, [host("drain")]) == f"sw-a ({hid[:12]}) is drained"
    assert host_away(hid, [host("pause")]) == f"sw-a ({hid[:12]}) is paused"
    assert host_away(hid, [host(state="down")]) == f"sw-a ({hid[:12]}) is down"
    assert host_away(hid, []) == f"({hid[:12]}) left the swarm"
    reason = runtime_reason(HostUnavailable("bsn-x is pinned to the host that holds its data, which sw-a is drained"))
    assert reason == "the host that holds the node's data is drained or down; the node waits for it"

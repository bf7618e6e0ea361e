"""Pure parts: member spec builders, secrets at rest (no Docker, no etcd)."""

from __future__ import annotations

import pytest
from django.test import override_settings

from apps.common.crypto import SecretUnreadable, decrypt_secret, encrypt_secret
from apps.ordering import spec
from apps.runtime.docker import container_create_kwargs

INST = "0123abcd-0000-0000-0000-000000000000"


def test_member_names_and_cluster_flags():
    names = [spec.member_name(INST, i) for i in range(3)]
    assert names == ["bsn-0123abcd-etcd-0", "bsn-0123abcd-etcd-1", "bsn-0123abcd-etcd-2"]
    assert spec.ordering_network_name(INST) == "bsn-0123abcd-ordering"
    s = spec.build_member_spec(
        installation_id=INST, index=1, members=names, token="tok", image="img", publish_host="10.0.0.5"
    )
    cmd = list(s.command)
    # The peer port: on the ordering network only (the wrapper adds --listen-peer-urls with
    # the member's address there); peers are named <member>.<ordering network>.
    assert cmd[:5] == [
        "python3",
        "-m",
        "bsn.ledger.etcd_member",
        "--peer-host=bsn-0123abcd-etcd-1.bsn-0123abcd-ordering",
        "--",
    ]
    assert cmd[5] == "etcd" and "--name=bsn-0123abcd-etcd-1" in cmd
    assert not [arg for arg in cmd if arg.startswith("--listen-peer-urls")]
    assert "--listen-client-urls=http://0.0.0.0:2379" in cmd  # apps reach the client port
    assert "--initial-advertise-peer-urls=http://bsn-0123abcd-etcd-1.bsn-0123abcd-ordering:2380" in cmd
    assert (
        "--initial-cluster=" + ",".join(f"{n}=http://{n}.bsn-0123abcd-ordering:2380" for n in names) in cmd
        and "--initial-cluster-state=new" in cmd
        and "--initial-cluster-token=tok" in cmd
    )
    assert s.labels["io.bsn.generation"] == "2"  # members of the 0.0.0.0 era are recreated
    assert "--auto-compaction-mode=revision" in cmd and "--auto-compaction-retention=1000" in cmd
    assert "--max-txn-ops=1024" in cmd and "--data-dir=/data/etcd" in cmd
    assert s.labels["io.bsn.role"] == "ordering" and s.labels["io.bsn.installation"] == INST
    assert "io.bsn.app" not in s.labels and "io.bsn.tenant" not in s.labels

    kwargs = container_create_kwargs(s)
    assert kwargs["user"] == "10001:10001" and kwargs["read_only"] and kwargs["cap_drop"] == ["ALL"]
    assert kwargs["security_opt"] == ["no-new-privileges:true"] and kwargs["mem_limit"] == "256m"
    assert kwargs["ports"] == {"2379/tcp": ("10.0.0.5", None)}  # the peer port is never published
    assert kwargs["volumes"] == {"bsn-0123abcd-etcd-1-data": {"bind": "/data", "mode": "rw"}}


def test_app_user_and_prefix():
    app_id = "6f1c8f0e-1111-2222-3333-444455556666"
    assert spec.app_user(app_id) == "app-6f1c8f0e111122223333444455556666"
    assert spec.app_prefix(app_id) == f"/bsn/apps/{app_id}/"


def test_secrets_round_trip_and_key_rotation():
    with override_settings(SECRET_KEY="old-key"):
        token = encrypt_secret("hunter2")
        assert "hunter2" not in token and decrypt_secret(token) == "hunter2"
        assert encrypt_secret("hunter2") != token  # random IV
    with override_settings(SECRET_KEY="new-key", SECRET_KEY_FALLBACKS=["old-key"]):
        assert decrypt_secret(token) == "hunter2"
    with override_settings(SECRET_KEY="new-key", SECRET_KEY_FALLBACKS=[]):
        with pytest.raises(SecretUnreadable, match="SECRET_KEY"):
            decrypt_secret(token)
    with pytest.raises(ValueError):
        decrypt_secret("not-a-token")


def test_member_wrapper_binds_the_peer_port_to_the_resolved_address(monkeypatch):
    from bsn.ledger import etcd_member

    argv = ["--peer-host=m.net", "--", "etcd", "--name=m", "--listen-peer-urls=http://0.0.0.0:2380"]
    assert etcd_member.command(argv, "172.30.0.4") == [
        "etcd",
        "--name=m",
        "--listen-peer-urls=http://172.30.0.4:2380",
    ]
    assert etcd_member.resolve("127.0.0.1") == "127.0.0.1"
    with pytest.raises(SystemExit, match="cannot resolve"):
        etcd_member.resolve("no-such-host.invalid", timeout=0)
    execs = []
    monkeypatch.setattr(etcd_member, "resolve", lambda host: {"m.net": "10.1.2.3"}[host])
    monkeypatch.setattr(etcd_member.os, "execvp", lambda path, args: execs.append(args))
    etcd_member.main(["--peer-host=m.net", "--", "etcd", "--name=m"])
    assert execs == [["etcd", "--name=m", "--listen-peer-urls=http://10.1.2.3:2380"]]
    with pytest.raises(SystemExit, match="usage"):
        etcd_member.main(["--", "etcd"])


def test_member_status_is_asked_once_for_callers_that_arrive_while_it_is_asked(monkeypatch):
    """``_members_answer``: parallel node steps share a status check under way (single
    flight); a caller after it has ended asks again, and sees a member that died since."""
    import threading
    import time

    from apps.ordering import services

    asked: list[str] = []
    alive = {"m0": True, "m1": True, "m2": True}
    inside = threading.Event()

    def health(endpoint: str):
        asked.append(endpoint)
        inside.set()
        time.sleep(0.2)
        return {"leader": "1"} if alive[endpoint] else None

    monkeypatch.setattr(services, "member_health", health)
    endpoints = ["m0", "m1", "m2"]
    answers: list[bool] = []
    first = threading.Thread(target=lambda: answers.append(services._members_answer(endpoints)))
    first.start()
    assert inside.wait(5)
    later = [threading.Thread(target=lambda: answers.append(services._members_answer(endpoints))) for _ in range(2)]
    for thread in later:
        thread.start()
    for thread in (first, *later):
        thread.join(10)
    assert answers == [True, True, True]
    assert sorted(asked) == endpoints  # one check for the three callers

    alive["m1"] = False  # killed after that check ended: the next caller asks and sees it
    assert services._members_answer(endpoints) is False
    assert len(asked) == 6

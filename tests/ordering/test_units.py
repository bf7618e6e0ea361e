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
    assert cmd[0] == "etcd" and "--name=bsn-0123abcd-etcd-1" in cmd
    assert (
        "--initial-cluster=" + ",".join(f"{n}=http://{n}:2380" for n in names) in cmd
        and "--initial-cluster-state=new" in cmd
        and "--initial-cluster-token=tok" in cmd
    )
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

"""TLS material of remote engines: checked on entry, stored encrypted, refused when missing."""

from __future__ import annotations

import pytest
from django.core.management import CommandError

from apps.audit.models import AuditEvent
from apps.regions.engine_tls import EngineTLSInvalid, check_engine_access, over_network, parse_tls
from apps.regions.models import Region
from tests.commands.test_commands import run
from tests.engines import make_tls


@pytest.fixture(scope="module")
def material():
    return make_tls()


def test_complete_material_parses_and_describes_the_client_without_secrets(material):
    tls = parse_tls(material.ca, material.client_cert, material.client_key)
    assert "bsn-control-plane" in tls.describe() and "PRIVATE" not in tls.describe()
    assert parse_tls("", " ", "") is None


@pytest.mark.parametrize(
    "change, message",
    [
        ({"key": ""}, "missing: client key"),
        ({"ca": "", "cert": ""}, "missing: CA, client certificate"),
        ({"ca": "not a pem"}, "CA is not a PEM certificate"),
        ({"cert": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"}, "client certificate is not"),
        ({"key": "garbage"}, "client key is not an unencrypted PEM private key"),
    ],
)
def test_incomplete_or_broken_material_is_refused_with_the_reason(material, change, message):
    parts = {"ca": material.ca, "cert": material.client_cert, "key": material.client_key, **change}
    with pytest.raises(EngineTLSInvalid, match=message):
        parse_tls(parts["ca"], parts["cert"], parts["key"])


def test_a_key_of_another_certificate_is_refused(material):
    other = make_tls()
    with pytest.raises(EngineTLSInvalid, match="does not belong"):
        parse_tls(material.ca, material.client_cert, other.client_key)


def test_network_engines_need_tls_unless_development_allows_it(material):
    tls = parse_tls(material.ca, material.client_cert, material.client_key)
    assert over_network("tcp://10.1.2.3:2376") and over_network("HTTPS://x:2376")
    assert not over_network("unix:///var/run/docker.sock") and not over_network("ssh://ops@host")
    for url in ("", "unix:///var/run/docker.sock", "ssh://ops@host"):
        check_engine_access("docker", url, None, allow_insecure=False)
    check_engine_access("process", "tcp://x:1", None, allow_insecure=False)  # not an engine URL
    check_engine_access("docker", "tcp://x:2376", tls, allow_insecure=False)
    check_engine_access("docker", "tcp://x:2375", None, allow_insecure=True)
    with pytest.raises(EngineTLSInvalid, match="over the network"):
        check_engine_access("docker", "tcp://x:2375", None, allow_insecure=False)


@pytest.mark.django_db
def test_bsn_region_add_stores_the_material_encrypted_and_audits_who_the_client_is(material, tmp_path):
    files = {}
    for name, text in (("ca", material.ca), ("cert", material.client_cert), ("key", material.client_key)):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_text(text)
    out = run(
        "bsn_region", "add", "cn-remote", "--docker-url", "tcp://127.0.0.1:2376",
        "--tls-ca", str(files["ca"]), "--tls-cert", str(files["cert"]), "--tls-key", str(files["key"]),
    )  # fmt: skip
    assert "added region cn-remote" in out
    region = Region.objects.get(code="cn-remote")
    stored = " ".join((region.tls_ca_encrypted, region.tls_cert_encrypted, region.tls_key_encrypted))
    assert "BEGIN" not in stored  # encrypted at rest
    assert region.tls().key.strip() == material.client_key.strip()
    event = AuditEvent.objects.get(action="region.add", object_id="cn-remote")
    assert "bsn-control-plane" in event.data["tls"] and "PRIVATE" not in str(event.data)


@pytest.mark.django_db
def test_bsn_region_add_refuses_a_network_engine_without_tls_and_a_missing_file(settings, tmp_path):
    settings.BSN_ALLOW_INSECURE_ENGINES = False
    with pytest.raises(CommandError, match="over the network"):
        run("bsn_region", "add", "cn-open", "--docker-url", "tcp://127.0.0.1:2375")
    with pytest.raises(CommandError, match="No such file"):
        run("bsn_region", "add", "cn-open", "--docker-url", "tcp://127.0.0.1:2376", "--tls-ca", str(tmp_path / "x"))
    with pytest.raises(CommandError, match="missing: client certificate, client key"):
        (tmp_path / "ca.pem").write_text(make_tls().ca)
        run(
            "bsn_region", "add", "cn-open", "--docker-url", "tcp://127.0.0.1:2376", "--tls-ca", str(tmp_path / "ca.pem")
        )
    assert not Region.objects.filter(code="cn-open").exists()


@pytest.mark.django_db
def test_bsn_region_add_a_swarm_region_as_a_remote_engine(settings, tmp_path):
    """``--driver swarm``: the manager's URL with the same TLS rules as a Docker engine;
    the region's driver is the Swarm driver, publishing on the hosts or on the mesh."""
    from apps.runtime.drivers import clear_driver_cache, driver_for_region, engine_key
    from apps.runtime.swarm import SwarmDriver

    settings.BSN_ALLOW_INSECURE_ENGINES = False
    with pytest.raises(CommandError, match="over the network"):
        run("bsn_region", "add", "cn-swarm", "--driver", "swarm", "--docker-url", "tcp://127.0.0.1:2375")
    material = make_tls()
    files = []
    for name, text in (("ca", material.ca), ("cert", material.client_cert), ("key", material.client_key)):
        (tmp_path / f"{name}.pem").write_text(text)
        files += [f"--tls-{name}", str(tmp_path / f"{name}.pem")]
    out = run(
        "bsn_region", "add", "cn-swarm", "--driver", "swarm", "--docker-url", "tcp://127.0.0.1:2376",
        "--publish-mode", "ingress", *files,
    )  # fmt: skip
    assert "added region cn-swarm (swarm)" in out
    region = Region.objects.get(code="cn-swarm")
    assert (region.driver, region.publish_mode) == ("swarm", "ingress")
    clear_driver_cache()
    driver = driver_for_region(region)
    assert isinstance(driver, SwarmDriver)
    assert (driver.region_code, driver.publish_mode, driver.tls is not None) == ("cn-swarm", "ingress", True)
    assert engine_key(region) == "swarm:tcp://127.0.0.1:2376"
    assert region.overlay_encryption is True and driver.overlay_encryption is True  # the default
    with pytest.raises(CommandError, match="invalid choice"):
        run("bsn_region", "add", "cn-swarm2", "--driver", "swarm", "--publish-mode", "everywhere")
    # A private host network (or kernels without ESP): the operator turns IPsec off.
    run(
        "bsn_region", "add", "cn-swarm3", "--driver", "swarm", "--docker-url", "tcp://127.0.0.1:2377",
        "--no-overlay-encryption", *files,
    )  # fmt: skip
    plain = Region.objects.get(code="cn-swarm3")
    assert plain.overlay_encryption is False and driver_for_region(plain).overlay_encryption is False

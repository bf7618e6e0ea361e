"""TLS between ordering members that peer across engines.

Members on one engine talk raft over their own ordering network, which no app network
reaches. Spread over engines they can only reach each other through peer ports published
on the hosts' addresses, which any container on those hosts can reach too. There etcd's
peer traffic is TLS with client certificates (``--peer-client-cert-auth``): only a holder
of a certificate signed by this cluster's own CA can join or speak raft. The CA is made
once per cluster (key stored encrypted); each member gets a certificate for its name and
its region's publish address, used as server and as client. The remote address of a
peer connection is a proxy's or a NAT's, never the address in the peer's certificate,
so the client-SAN check is skipped (``--experimental-peer-skip-client-san-verification``):
the CA signature is what admits a peer.

Written with ``cryptography`` (a tiny private CA; no library for that is warranted).
"""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 3650  # members are re-issued when their address changes, not on a schedule


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def new_ca(label: str) -> tuple[str, str]:
    """(certificate PEM, key PEM) of a new CA for one ordering cluster."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bsn ordering peers {label}")])
    cert = (
        _builder(name, name, key.public_key(), VALID_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key)


def member_certificate(ca_cert_pem: str, ca_key_pem: str, name: str, host: str) -> tuple[str, str]:
    """(certificate PEM, key PEM) for member ``name`` reached at ``host`` (an IP or a name)."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        where: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        where = x509.DNSName(host)
    cert = (
        _builder(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), ca_cert.subject, key.public_key(), VALID_DAYS
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([where, x509.DNSName(name)]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key)


def certificate_names(cert_pem: str, ca_cert_pem: str, host: str) -> bool:
    """Is ``cert_pem`` issued by this CA for ``host``? (Else the member needs a new one.)"""
    if not cert_pem:
        return False
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    if cert.issuer != ca_cert.subject:
        return False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    try:
        return ipaddress.ip_address(host) in san.get_values_for_type(x509.IPAddress)
    except ValueError:
        return host in san.get_values_for_type(x509.DNSName)

"""The outbound sender on its own: SSRF refusals, the checked address is the one connected to,
no redirects, short timeouts, bounded reads. Nothing here leaves loopback."""

from __future__ import annotations

import hashlib
import hmac
import socket
import threading
import time

import pytest

from apps.webhooks import sender


def post(url: str, *, allow_private: bool, read_timeout: float = 2.0) -> sender.Outcome:
    body = b'{"hello":"world"}'
    headers = sender.headers_for(
        secret="s" * 20, body=body, timestamp=int(time.time()), delivery_id="d", event_name="e"
    )
    return sender.send(url, body, headers, allow_private=allow_private, connect_timeout=1.0, read_timeout=read_timeout)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.251",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:10.0.0.1",
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2001:db8::1",
    ],
)
def test_non_public_addresses_are_not_allowed(address):
    assert not sender.address_allowed(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address):
    assert sender.address_allowed(address)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/hook",
        "http://[::1]:{port}/hook",
        "http://localhost:{port}/hook",
        "http://2130706433:{port}/hook",  # 127.0.0.1 written as one number: the resolver's answer is judged
        "http://0177.0.0.1:{port}/hook",  # and in octal
        "http://10.255.255.1/hook",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
def test_send_refuses_before_connecting_when_private_is_not_allowed(receiver, url):
    outcome = post(url.format(port=receiver.port), allow_private=False)
    assert outcome.status is None and outcome.permanent
    assert outcome.error.startswith("address-not-allowed"), outcome.error
    assert receiver.received == []


def test_every_resolved_address_must_be_public(monkeypatch):
    """A name with one public and one private address is refused: no connection at all."""
    connects = []
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port, **kw: [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port)),
        ],
    )
    monkeypatch.setattr(socket, "create_connection", lambda *a, **kw: connects.append(a))
    outcome = post("https://mixed.example/hook", allow_private=False)
    assert outcome.permanent and "10.0.0.5" in outcome.error and connects == []


def test_the_name_is_resolved_once_and_the_checked_address_is_used(receiver, monkeypatch):
    """DNS rebinding: a second lookup would answer elsewhere; there is no second lookup."""
    answers = iter(["127.0.0.1", "169.254.169.254"])
    calls = []
    real = socket.getaddrinfo

    def rebinding(host, port, *args, **kw):
        if host == "rebind.test":
            calls.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]
        return real(host, port, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    outcome = post(f"http://rebind.test:{receiver.port}/hook", allow_private=True)
    assert outcome.status == 200 and calls == ["rebind.test"]
    (got,) = receiver.received
    assert got.headers["Host"] == f"rebind.test:{receiver.port}"  # the name kept, the address checked


def test_redirects_are_not_followed(receiver):
    receiver.status_for = lambda item: 302
    outcome = post(receiver.url + "/hook", allow_private=True)
    assert outcome.status == 302 and not outcome.ok and "not followed" in outcome.error
    assert len(receiver.received) == 1  # /elsewhere was never asked


def test_a_slow_receiver_times_out_and_a_huge_answer_is_read_bounded():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]
    stop = threading.Event()

    mode = ["slow"]

    def answer(conn, how):
        conn.recv(65536)
        try:
            if how == "huge":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
                for _ in range(2000):
                    conn.sendall(b"x" * 65536)
            else:
                time.sleep(3)  # never answers within the read timeout
        except OSError:
            pass
        conn.close()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(conn, mode[0]), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        slow = post(f"http://127.0.0.1:{port}/", allow_private=True, read_timeout=0.5)
        assert slow.status is None and slow.error.startswith("timeout"), slow
        assert time.monotonic() - started < 2.5
        mode[0] = "huge"
        started = time.monotonic()
        huge = post(f"http://127.0.0.1:{port}/", allow_private=True, read_timeout=2.0)
        assert huge.status == 200 and huge.ok
        assert time.monotonic() - started < 5  # 64 KiB read, not 100 MB
    finally:
        stop.set()
        server.close()


def test_signature_format():
    sig = sender.signature("secret-0123456789", b'{"a":1}', 1764000000)
    mac = hmac.new(b"secret-0123456789", b'1764000000.{"a":1}', hashlib.sha256).hexdigest()
    assert sig == f"t=1764000000,v1={mac}"


def test_https_checks_the_certificate_against_the_name_not_the_address(tmp_path, monkeypatch):
    """A TLS receiver with a certificate no public CA signed is refused: the sender verifies
    certificates (for the URL's name, sent as SNI) even though it connects to an address."""
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hooks.test")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(2)
    port = server.getsockname()[1]
    seen_sni = []

    def sni(sock, server_name, ctx):
        seen_sni.append(server_name)

    context.sni_callback = sni

    def serve():
        try:
            conn, _ = server.accept()
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1024)
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    real = socket.getaddrinfo
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, p, *a, **kw: (
            [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", p))]
            if host == "hooks.test"
            else real(host, p, *a, **kw)
        ),
    )
    try:
        outcome = post(f"https://hooks.test:{port}/hook", allow_private=True)
    finally:
        server.close()
        thread.join(5)
    assert outcome.status is None and not outcome.ok
    assert "SSL" in outcome.error, outcome.error
    assert seen_sni == ["hooks.test"]

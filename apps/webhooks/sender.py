"""Outbound webhook requests: pure builders (body, signature, address check) and one thin sender.

Signature format (docs/webhooks.md): ``BSN-Signature: t=<unix seconds>,v1=<hex
HMAC-SHA256(secret, "<t>.<raw body>")>``.

SSRF: the host is resolved once, *every* address it resolves to must be a public one
(``address_allowed``), and the connection goes to that checked address (the Host header
and, for HTTPS, SNI and certificate check keep the name). So a name that resolves to a
public address when checked and to 169.254.169.254 a moment later (DNS rebinding) cannot
redirect the request: there is no second lookup. Redirects are never followed, timeouts
are short, and only the first ``MAX_RESPONSE_BYTES`` of an answer are read.

Hand-written on urllib3 (already a dependency through requests): ``requests`` cannot be
told to connect to one address while naming another host for TLS, and the libraries that
wrap it for SSRF (advocate) are unmaintained.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import certifi
import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error

SIGNATURE_HEADER = "BSN-Signature"
MAX_RESPONSE_BYTES = 64 * 1024  # what the delivery log keeps of an answer is far less
USER_AGENT = "bsn-webhooks/1"


class AddressRefused(Exception):
    """The URL's host is, or resolves to, an address webhooks may not reach (permanent)."""


@dataclass(frozen=True)
class Outcome:
    """What one attempt gave: an HTTP status (None when no answer), latency, a short error."""

    status: int | None
    latency_ms: int
    error: str = ""
    permanent: bool = False  # never worth retrying (an address that is not allowed)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


# --------------------------------------------------------------------------- pure builders


def body_bytes(document: dict[str, Any]) -> bytes:
    """The JSON body exactly as sent and signed (sorted keys, compact, UTF-8)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signature(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def headers_for(*, secret: str, body: bytes, timestamp: int, delivery_id: str, event_name: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: signature(secret, body, timestamp),
        "BSN-Delivery": delivery_id,
        "BSN-Event": event_name,
    }


def address_allowed(address: str) -> bool:
    """True for a public unicast address; False for private, loopback, link-local,
    multicast, reserved, unspecified, shared (100.64/10) and documentation ranges, and
    for IPv6 forms that carry such an IPv4 address (mapped, 6to4, Teredo)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # a zone id (fe80::1%eth0) is link-local anyway
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d reaches a.b.c.d: judged as that address
            return address_allowed(str(ip.ipv4_mapped))
        embedded = [a for a in (ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())) if a is not None]
        if any(not address_allowed(str(a)) for a in embedded):
            return False
    return bool(
        ip.is_global
        and not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast)
        and not (ip.is_reserved or ip.is_unspecified)
    )


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, target) of an http(s) URL; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in the URL are not allowed; the signature authenticates the platform")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port, target


def literal_address(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def resolve(host: str, port: int, *, allow_private: bool) -> list[str]:
    """Every address ``host`` resolves to, each checked; AddressRefused if any is not allowed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OSError(f"cannot resolve {host}: {exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        refused = [a for a in addresses if not address_allowed(a)]
        if refused:
            raise AddressRefused(f"{host} resolves to {', '.join(refused)}, which webhooks may not reach")
    return addresses


# --------------------------------------------------------------------------- the thin sender


def send(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allow_private: bool,
    connect_timeout: float,
    read_timeout: float,
) -> Outcome:
    """POST ``body`` to ``url`` once, connecting only to checked addresses; never raises."""
    started = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        scheme, host, port, target = split_url(url)
        addresses = resolve(host, port, allow_private=allow_private)
    except AddressRefused as exc:
        return Outcome(None, took(), f"address-not-allowed: {exc}", permanent=True)
    except (ValueError, OSError) as exc:
        return Outcome(None, took(), f"connect: {exc}")
    named = f"[{host}]" if ":" in host else host  # an IPv6 literal goes in brackets
    host_header = named if port == (443 if scheme == "https" else 80) else f"{named}:{port}"
    timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
    last_error = "no address"
    for address in addresses:
        if scheme == "https":
            pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
                address,
                port,
                timeout=timeout,
                retries=False,
                maxsize=1,
                cert_reqs="CERT_REQUIRED",
                ca_certs=certifi.where(),
                server_hostname=host,
                assert_hostname=host,
            )
        else:
            pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False, maxsize=1)
        try:
            response = pool.urlopen(
                "POST",
                target,
                body=body,
                headers={**headers, "Host": host_header, "Content-Length": str(len(body))},
                redirect=False,
                retries=False,
                preload_content=False,
                assert_same_host=False,
            )
        except urllib3.exceptions.NewConnectionError as exc:
            last_error = f"connect: {exc.__class__.__name__}"
            pool.close()
            continue  # the next checked address of the same name
        except (Urllib3Error, OSError) as exc:
            pool.close()
            kind = "timeout" if isinstance(exc, urllib3.exceptions.TimeoutError) else "error"
            return Outcome(None, took(), f"{kind}: {exc.__class__.__name__}")
        try:
            # Bounded: at most MAX_RESPONSE_BYTES, and no longer than one more read timeout.
            deadline = time.monotonic() + read_timeout
            read = 0
            while read < MAX_RESPONSE_BYTES and time.monotonic() < deadline:
                chunk = response.read(min(8192, MAX_RESPONSE_BYTES - read))
                if not chunk:
                    break
                read += len(chunk)
        except (Urllib3Error, OSError):
            pass  # the status line came: the answer counts, its body does not matter
        finally:
            response.release_conn()
            pool.close()
        status = response.status
        error = ""
        if 300 <= status < 400:
            error = f"redirect to {response.headers.get('Location', '?')[:200]} not followed"
        elif not 200 <= status < 300:
            error = f"HTTP {status}"
        return Outcome(status, took(), error)
    return Outcome(None, took(), last_error)

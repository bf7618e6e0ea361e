"""More Docker engines for the tests: regions that are really separate engines.

``start_engine`` runs another ``dockerd`` on this machine with its own socket, data root,
exec root and address pool, and no iptables rules of its own (two daemons editing the
same chains would undo each other's; its published ports are served by docker-proxy). With
``tls=True`` it listens on a loopback TCP port with ``--tlsverify`` and certificates made
here (``make_tls``): the client presents a certificate signed by the test CA, as a remote
engine of a real installation would demand.

Each engine gets a *publish network*, a bridge the test creates on that engine: its
gateway is a host address that containers of every engine can reach (loopback is each
container's own), so nodes on different engines reach each other's published ports there.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from apps.runtime.docker import engine_client

PUBLISH_NETWORK = "bsn-test-publish"


@dataclass
class TlsSet:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def _pem_key(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _cert(subject: str, key, issuer_name, issuer_key, *, ca: bool = False, server: bool = False, client: bool = False):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if client:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def make_tls(client_name: str = "bsn-control-plane") -> TlsSet:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM texts."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("bsn test engine CA", ca_key, None, None, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert("127.0.0.1", server_key, ca.subject, ca_key, server=True)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _cert(client_name, client_key, ca.subject, ca_key, client=True)
    pem = serialization.Encoding.PEM
    return TlsSet(
        ca=ca.public_bytes(pem).decode(),
        server_cert=server.public_bytes(pem).decode(),
        server_key=_pem_key(server_key),
        client_cert=client.public_bytes(pem).decode(),
        client_key=_pem_key(client_key),
    )


def engines_lock(state_dir: Path, timeout: float = 1800):
    """An exclusive lock on the extra engines for this test session (released when the
    returned file is closed): two sessions on one machine would start daemons on the same
    sockets, data roots and address pools and stop each other's."""
    state_dir.mkdir(parents=True, exist_ok=True)
    handle = open(state_dir / "engines.lock", "w")  # held for the whole session
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                raise RuntimeError(f"another test session holds {state_dir / 'engines.lock'}") from None
            time.sleep(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(make_client) -> bool:
    """Whether the engine ``make_client()`` reaches answers a ping."""
    try:
        client = make_client()
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (docker.errors.DockerException, OSError):
        return False


@dataclass
class Engine:
    name: str
    base_url: str
    root: Path
    process: subprocess.Popen | None = None
    tls: TlsSet | None = None
    publish_host: str = ""
    extra: dict = field(default_factory=dict)
    keep_bridge: list[str] = field(default_factory=list)

    def client(self) -> docker.DockerClient:
        tls = False
        if self.tls:
            paths = self.root / "client"
            tls = docker.tls.TLSConfig(
                client_cert=(str(paths / "cert.pem"), str(paths / "key.pem")),
                ca_cert=str(paths / "ca.pem"),
                verify=str(paths / "ca.pem"),
            )
        return engine_client(self.base_url, tls=tls or None, timeout=60)

    def answers(self) -> bool:
        return answers(self.client)

    def stop(self, timeout: float = 30) -> None:
        """Stop the daemon (SIGTERM; its containers stop with it, as a machine going down)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        restore_main_bridge(self.keep_bridge)

    def start(self, timeout: float = 60) -> None:
        """Start the stopped daemon again on the same data root, with the same socket, or
        the same port and TLS material (a machine coming back, as the regions stored it)."""
        again = start_engine(
            self.name,
            pool=self.extra["pool"],
            tls=self.tls or False,
            port=self.extra.get("port"),
            state_dir=self.root.parent,
            timeout=timeout,
        )
        self.process, self.keep_bridge = again.process, again.keep_bridge


def start_engine(
    name: str,
    *,
    pool: str,
    tls: bool | TlsSet = False,
    state_dir: Path,
    timeout: float = 60,
    port: int | None = None,
) -> Engine:
    """Start (or restart on the same data root) engine ``name``; wait until it answers.

    ``pool`` is its own address pool (e.g. ``172.24.0.0/16``), distinct from every other
    engine's. The data root outlives the process, so a restart keeps images and volumes.
    ``tls``: True makes new TLS material, a ``TlsSet`` reuses it; ``port`` (TLS only) is
    the port to listen on, else a free one (``Engine.start`` passes both back).
    """
    root = state_dir / name
    run = Path(f"/run/bsn-test-{name}")  # unix socket paths must stay short
    for d in (root, run):
        d.mkdir(parents=True, exist_ok=True)
    argv = [
        shutil.which("dockerd") or "dockerd",
        f"--data-root={root / 'data'}",
        f"--exec-root={run / 'exec'}",
        f"--pidfile={run / 'docker.pid'}",
        # Its own default bridge: ``--bridge=none`` would make dockerd delete the host's
        # docker0, which the main engine's default network lives on.
        f"--bridge={own_bridge(name, pool)}",
        "--iptables=false",
        "--ip-masq=false",
        f"--default-address-pool=base={pool},size=24",
    ]
    material = None
    if tls:
        material = tls if isinstance(tls, TlsSet) else make_tls()
        certs = root / "server"
        client_dir = root / "client"
        for d in (certs, client_dir):
            d.mkdir(exist_ok=True, mode=0o700)
        for path, text in (
            (certs / "ca.pem", material.ca),
            (certs / "cert.pem", material.server_cert),
            (certs / "key.pem", material.server_key),
            (client_dir / "ca.pem", material.ca),
            (client_dir / "cert.pem", material.client_cert),
            (client_dir / "key.pem", material.client_key),
        ):
            path.write_text(text)
            path.chmod(0o600)
        port = port or free_port()
        base_url = f"tcp://127.0.0.1:{port}"
        argv += [
            "--tlsverify",
            f"--tlscacert={certs / 'ca.pem'}",
            f"--tlscert={certs / 'cert.pem'}",
            f"--tlskey={certs / 'key.pem'}",
            f"--host=tcp://127.0.0.1:{port}",
        ]
    else:
        base_url = f"unix://{run / 'docker.sock'}"
        argv.append(f"--host={base_url}")
    stop_earlier_daemon(run)
    allow_inside(pool)
    log = open(root / "dockerd.log", "ab")  # the daemon writes it for its whole life
    keep = main_bridge_addresses()
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    engine = Engine(
        name=name,
        base_url=base_url,
        root=root,
        process=process,
        tls=material,
        keep_bridge=keep,
        extra={"pool": pool, "port": port if tls else None},
    )
    deadline = time.monotonic() + timeout
    while not engine.answers():
        if process.poll() is not None or time.monotonic() > deadline:
            engine.stop()
            tail = (root / "dockerd.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"dockerd {name} did not start:\n{tail}")
        time.sleep(0.2)
    restore_main_bridge(keep)
    return engine


def stop_earlier_daemon(run: Path, timeout: float = 15) -> None:
    """Stop the daemon an earlier run left on ``run`` and remove its pid file.

    dockerd refuses to start while its pid file names a live process, and after a reboot
    or a killed test run that number may belong to anything: only a process whose command
    line is a dockerd with this exec root is signalled; in every case the file goes.
    """
    pidfile = run / "docker.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        pidfile.unlink(missing_ok=True)
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        cmdline = []
    ours = cmdline and Path(cmdline[0].decode(errors="replace")).name == "dockerd"
    if ours and f"--exec-root={run / 'exec'}".encode() in cmdline:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
    pidfile.unlink(missing_ok=True)


MAIN_BRIDGE = "docker0"


def main_bridge_addresses() -> list[str]:
    """The main engine's default bridge addresses (``ip -j addr``), to put back if needed."""
    out = subprocess.run(
        [shutil.which("ip") or "ip", "-j", "addr", "show", "dev", MAIN_BRIDGE], capture_output=True, text=True
    )
    if out.returncode != 0:
        return []
    return [f"{a['local']}/{a['prefixlen']}" for link in json.loads(out.stdout) for a in link.get("addr_info", [])]


def restore_main_bridge(addresses: list[str]) -> None:
    """dockerd 20.10, restarted on a data root it has used before with its own
    ``--bridge``, deletes the host's ``docker0`` while it clears its stale default network
    (reproduced: first start fine, every restart removes it), and the main engine's
    default network then fails with "could not find bridge docker0". Put the interface
    back with its addresses; the main engine finds it by name again."""
    if not addresses or Path(f"/sys/class/net/{MAIN_BRIDGE}").exists():
        return
    ip = shutil.which("ip") or "ip"
    subprocess.run([ip, "link", "add", MAIN_BRIDGE, "type", "bridge"], check=True, capture_output=True)
    for address in addresses:
        subprocess.run([ip, "addr", "add", address, "dev", MAIN_BRIDGE], check=True, capture_output=True)
    subprocess.run([ip, "link", "set", MAIN_BRIDGE, "up"], check=True, capture_output=True)


def own_bridge(name: str, pool: str) -> str:
    """A bridge interface for engine ``name`` on the last /24 of its pool (made once)."""
    bridge = f"bsn-{name}br"[:15]
    if not Path(f"/sys/class/net/{bridge}").exists():
        network = ipaddress.ip_network(pool)
        last = list(network.subnets(new_prefix=24))[-1]
        ip = shutil.which("ip") or "ip"
        subprocess.run([ip, "link", "add", "name", bridge, "type", "bridge"], check=True, capture_output=True)
        subprocess.run([ip, "addr", "add", f"{last[1]}/24", "dev", bridge], check=True, capture_output=True)
        subprocess.run([ip, "link", "set", bridge, "up"], check=True, capture_output=True)
    return bridge


def allow_inside(pool: str) -> None:
    """Let containers of an engine without iptables rules reach each other. The main
    engine sets the FORWARD policy to DROP and accepts only its own bridges, and bridged
    traffic passes iptables here (br_netfilter); DOCKER-USER is the chain Docker leaves to
    the administrator. Only traffic within the pool: other engines' containers still come
    in through published ports, as from another machine."""
    rule = ["DOCKER-USER", "-s", pool, "-d", pool, "-j", "ACCEPT"]
    iptables = shutil.which("iptables")
    if iptables is None:
        return  # no firewall tool, no FORWARD policy to work around
    if subprocess.run([iptables, "-C", *rule], capture_output=True).returncode != 0:
        subprocess.run([iptables, "-I", *rule], check=True, capture_output=True)


def clear_engine(client: docker.DockerClient) -> None:
    """Every object a test made on an engine only tests use (never the main engine)."""
    for container in client.containers.list(all=True):
        if container.name.startswith("bsn-"):
            container.remove(force=True, v=True)
    for network in client.networks.list():
        if network.name.startswith("bsn-") and network.name != PUBLISH_NETWORK:
            network.remove()
    for volume in client.volumes.list():
        if volume.name.startswith("bsn-"):
            volume.remove(force=True)


# The harness's extra engines: e2 on its own unix socket, e3 over TCP with TLS and client
# certificates; each with its own address pool.
EXTRA_ENGINES = (("e2", "172.24.0.0/16", False), ("e3", "172.25.0.0/16", True))


def start_extra_engines(state_dir: Path) -> list[Engine]:
    """Start ``EXTRA_ENGINES`` (the caller holds ``engines_lock``), each cleared of an
    earlier run's objects and given its ``publish_host``; on a failure those already
    started are stopped and the error raised."""
    started: list[Engine] = []
    try:
        for name, pool, tls in EXTRA_ENGINES:
            engine = start_engine(name, pool=pool, tls=tls, state_dir=state_dir)
            started.append(engine)
            client = engine.client()
            clear_engine(client)
            engine.publish_host = publish_network_gateway(client)
            client.close()
    except BaseException:
        for engine in started:
            engine.stop()
        raise
    return started


def main_engine(client: docker.DockerClient, state_dir: Path) -> Engine:
    """The control plane's own engine as an ``Engine`` (not started or stopped here), with
    the publish address the other engines' containers reach it at."""
    from django.conf import settings

    main = Engine(name="main", base_url=settings.BSN_DOCKER_BASE_URL, root=state_dir / "main")
    main.publish_host = publish_network_gateway(client)
    return main


def engine_region(engine: Engine, code: str, name: str):
    """Register a Docker region on ``engine`` through the operator's service
    (``region_add``, as ``bsn_region add`` does): its publish address, and its TLS
    material when the engine demands client certificates. The main engine is the local one."""
    from apps.regions.engine_tls import EngineTLS
    from apps.regions.services import region_add

    tls = engine.tls
    return region_add(
        code=code,
        name=name,
        driver="docker",
        docker_base_url="" if engine.name == "main" else engine.base_url,
        publish_host=engine.publish_host,
        tls=EngineTLS(ca=tls.ca, cert=tls.client_cert, key=tls.client_key) if tls else None,
    )


def publish_network_gateway(client: docker.DockerClient) -> str:
    """The host-side address of the test's publish network on this engine (created if
    needed): where regions on this engine publish node ports for the other engines."""
    try:
        network = client.networks.get(PUBLISH_NETWORK)
    except docker.errors.NotFound:
        network = client.networks.create(PUBLISH_NETWORK, driver="bridge", labels={"io.bsn.test": "publish"})
    network.reload()
    return network.attrs["IPAM"]["Config"][0]["Gateway"]

"""The tenant's client installs on its own (issue 10, "developer experience"): a wheel
built from the repository's pyproject.toml holds `bsn.client` and the ledger's signing
code only, and works outside the repository with requests and cryptography, pulling in
nothing of the control plane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, sys
from bsn.client import Client, generate_key
from bsn.ledger.canonical import canonical
from bsn.ledger.crypto import verify
private, public = generate_key()
client = Client("http://127.0.0.1:9", "token", "app-1", "alice", private)
envelope = client.sign("kv", "put", {"key": "greeting", "value": "ni hao"})
assert verify(public, envelope["sig"], canonical(envelope["tx"]))
print(json.dumps({
    "file": __import__("bsn").__file__,
    "control_plane": sorted(m for m in sys.modules if m.split(".")[0] in ("django", "celery", "apps", "kombu")),
    "repr": repr(client),
}))
"""


def test_the_client_wheel_holds_the_client_only_and_works_outside_the_repository(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels)],
        check=True,
        cwd=tmp_path,
        timeout=300,
    )
    (wheel,) = wheels.glob("bsn_client-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    modules = {n for n in names if n.endswith(".py")}
    assert "bsn/client.py" in modules and "bsn/ledger/tx.py" in modules
    assert not [
        n for n in modules if not (n == "bsn/__init__.py" or n == "bsn/client.py" or n.startswith("bsn/ledger/"))
    ]
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert {line.split(">=")[0] for line in metadata.splitlines() if line.startswith("Requires-Dist:")} == {
        "Requires-Dist: requests",
        "Requires-Dist: cryptography",
    }

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        timeout=300,
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the repository
        env={**env, "PYTHONPATH": str(target)},
        timeout=60,
    )
    result = json.loads(out.stdout)
    assert result["file"].startswith(str(target))
    assert result["control_plane"] == []
    assert "private" not in result["repr"].lower()

"""The API keeps its documented contract: schemathesis over the whole OpenAPI schema.

`schemathesis run` (every check, every phase, a bounded number of examples per operation)
against a live server on loopback with a tenant owner's token. The run must report no
failure; its JUnit report is kept under `.data/test/schemathesis/` for reading.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from apps.chainapps.builtin import ensure_builtin_framework
from apps.chainapps.models import Framework
from apps.tenants.services import token_issue
from tests.factories import MembershipFactory, RegionFactory

ROOT = Path(__file__).resolve().parents[2]
REPORTS = ROOT / ".data" / "test" / "schemathesis"
EXAMPLES = int(os.environ.get("BSN_SCHEMATHESIS_EXAMPLES", "20"))  # make contract: 40


@pytest.mark.django_db(transaction=True)
def test_schema_and_behaviour_agree(live_server):
    ensure_builtin_framework(Framework)
    for code in ("cn-beijing", "cn-shanghai", "cn-shenzhen"):  # schemathesis.toml seeds creates with these
        RegionFactory(code=code)
    owner = MembershipFactory()
    secret = token_issue(membership=owner, name="schemathesis").secret
    REPORTS.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{live_server.url}/api/v1/schema",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(EXAMPLES),
        "--header",
        f"Authorization: Token {secret}",
        "--report",
        "junit",
        "--report-dir",
        str(REPORTS),
        "--seed",
        os.environ.get("BSN_SCHEMATHESIS_SEED", "1"),
        "--no-color",
        *shlex.split(os.environ.get("BSN_SCHEMATHESIS_ARGS", "")),  # e.g. --include-name 'POST /api/v1/apps'
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, cwd=ROOT)
    (REPORTS / "output.txt").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-3000:]

"""`make run`'s stack as a user runs it: a process that dies is restarted, the others keep serving.

Starts deploy/scripts/run-embedded.sh (SQLite, file-system broker, supervisord; the process
driver) in a fresh data directory on a free loopback port, kills the worker and beat with
SIGKILL, and checks that both come back with new pids while the web process answers all
along, that the files holding secrets are private, and that a second run keeps the login.
The long version with traffic and operations is `make soak` (tests/soak.py).
"""

from __future__ import annotations

import os
import signal
import stat
import time

import pytest
import requests

from tests.soak import Stack, _free_port


@pytest.fixture
def stack(tmp_path):
    stack = Stack(tmp_path / "data", _free_port())
    stack.start()
    yield stack
    stack.stop()


def _pids(stack: Stack) -> dict[str, int]:
    pids = {}
    for name in ("web", "worker", "beat"):
        out = stack.ctl("pid", name)
        pids[name] = int(out) if out.isdigit() else 0
    return pids


def _wait_running(stack: Stack, old: dict[str, int], names: tuple[str, ...], seconds: float = 120) -> dict[str, int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = stack.ctl("status")
        pids = _pids(stack)
        restarted = all(pids[n] and pids[n] != old[n] for n in names)
        if restarted and status.count("RUNNING") == 3:
            return pids
        time.sleep(0.5)
    raise AssertionError(f"not restarted within {seconds} s:\n{stack.ctl('status')}")


def test_killed_processes_are_restarted_and_web_keeps_answering(stack):
    data = stack.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("demo-login.txt", "dcep-login.txt", "secret_key"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name

    before = _pids(stack)
    assert all(before.values()), before
    os.kill(before["worker"], signal.SIGKILL)
    os.kill(before["beat"], signal.SIGKILL)
    answers = []
    deadline = time.monotonic() + 120
    after = None
    while time.monotonic() < deadline and after is None:
        answers.append(requests.get(stack.base + "/healthz", timeout=10).status_code)
        try:
            after = _wait_running(stack, before, ("worker", "beat"), seconds=1)
        except AssertionError:
            continue
    assert after is not None, stack.ctl("status")
    assert after["web"] == before["web"], "web was not taken down with them"
    assert set(answers) == {200}
    log = (data / "supervisord.log").read_text()
    assert "exited: worker (terminated by SIGKILL; not expected)" in log
    assert "exited: beat (terminated by SIGKILL; not expected)" in log

    # The restarted worker does work: an authenticated API call that enqueues nothing
    # answers, and the login printed on the first run still works.
    logins = (data / "demo-login.txt").read_text()
    token = next(line.split(": ", 1)[1] for line in logins.splitlines() if line.startswith("API token: "))
    resp = requests.get(stack.base + "/api/v1/tenant", headers={"Authorization": f"Token {token}"}, timeout=10)
    assert resp.status_code == 200 and resp.json()["slug"] == "demo"

    # A second `make run` on the same data directory: the operator can still log in.
    _second_run_keeps_the_logins(stack)


def _second_run_keeps_the_logins(stack: Stack) -> None:
    logins = (stack.data_dir / "demo-login.txt").read_text()
    stack.stop()
    second = Stack(stack.data_dir, _free_port())
    second.start()
    try:
        again = (second.data_dir / "demo-login.txt").read_text()
        output = second.log_path.read_text()
        assert again == logins, "the same operator and tenant logins, the same token"
        assert "operator login (Django admin /admin/): admin / " in output
        assert "changepassword admin" in output
        session = requests.Session()
        page = session.get(second.base + "/admin/login/", timeout=10)
        password = next(line.split(" / ")[1] for line in again.splitlines() if line.startswith("operator login"))
        resp = session.post(
            second.base + "/admin/login/?next=/admin/",
            data={"username": "admin", "password": password, "csrfmiddlewaretoken": page.cookies["csrftoken"]},
            headers={"Referer": second.base + "/admin/login/"},
            allow_redirects=False,
            timeout=10,
        )
        assert resp.status_code == 302 and resp.headers["Location"] == "/admin/"
    finally:
        second.stop()

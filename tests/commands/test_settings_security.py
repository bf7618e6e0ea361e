"""Settings an attacker or an auditor looks at (issue 8 §5, §6), each read by a fresh process.

- the embedded secret-key file is 0600 from its creation, and processes starting at once
  agree on one key;
- SECRET_KEY_FALLBACKS comes from the environment: secrets encrypted at rest and signed
  values made with the old key still open after a rotation;
- BSN_HTTPS=true turns on HSTS, the SSL redirect, secure cookies and the proxy header (each
  settable on its own), and with the documented production variables
  ``manage.py check --deploy --fail-level WARNING`` passes.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STRONG_KEY = "k3y-" + "Zq9xW2vB7nM4pL8rT1yU6iO3aS5dF0gH-jK_lE2cV9bN7mQ4wR8tY1uI6oP3sA"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BSN_", "DATABASE_URL", "CELERY_"))}
    env.update({"DJANGO_SETTINGS_MODULE": "bsn.settings", "BSN_DATA_DIR": str(tmp_path / "data")})
    env.update(extra)
    return env


def _python(code: str, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, umask=0o022
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


SETUP = "import json\nimport django; django.setup(); from django.conf import settings\n"


class TestSecretKeyFile:
    def test_created_0600_and_agreed_on_by_processes_starting_together(self, tmp_path):
        env = _env(tmp_path)
        code = SETUP + "print(settings.SECRET_KEY)"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, umask=0o022
            )
            for _ in range(4)
        ]
        keys = {p.communicate(timeout=120)[0].strip() for p in procs}
        assert all(p.returncode == 0 for p in procs)
        assert len(keys) == 1 and len(keys.pop()) >= 50
        data = tmp_path / "data"
        key_file = data / "secret_key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert not [p for p in data.iterdir() if p.name.startswith(".secret_key-")], "no temporary file left"

    def test_never_visible_with_wider_permissions(self, tmp_path):
        # The key is written into a file that is 0600 before the first byte: the only
        # names it ever has are mkstemp's (0600) and the final one (a hard link to it).
        env = _env(tmp_path)
        _python(SETUP, env)
        key_file = tmp_path / "data" / "secret_key"
        assert key_file.stat().st_nlink == 1
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


class TestSecretKeyRotation:
    def test_secrets_encrypted_with_the_old_key_still_decrypt(self, tmp_path):
        old, new = "old-" + STRONG_KEY, "new-" + STRONG_KEY
        encrypt = SETUP + (
            "from apps.common.crypto import encrypt_secret; from django.core import signing\n"
            "print(json.dumps([encrypt_secret('node-private-key'), signing.dumps('session')]))"
        )
        sealed, signed = json.loads(_python(encrypt, _env(tmp_path, BSN_SECRET_KEY=old)))
        opened = SETUP + (
            "from apps.common.crypto import decrypt_secret; from django.core import signing\n"
            f"print(decrypt_secret({sealed!r}), signing.loads({signed!r}))"
        )
        rotated = _env(tmp_path, BSN_SECRET_KEY=new, BSN_SECRET_KEY_FALLBACKS=f"some-older-key,{old}")
        assert _python(opened, rotated).split() == ["node-private-key", "session"]
        # Without the fallback the old secret is unreadable (a clear error, not garbage).
        check = SETUP + (
            "from apps.common.crypto import decrypt_secret, SecretUnreadable\n"
            f"try:\n    decrypt_secret({sealed!r})\nexcept SecretUnreadable:\n    print('unreadable')"
        )
        assert _python(check, _env(tmp_path, BSN_SECRET_KEY=new)).strip() == "unreadable"

    def test_fallbacks_from_a_file(self, tmp_path):
        keys = tmp_path / "fallbacks"
        keys.write_text("first-old-key\nsecond-old-key\n")
        out = _python(
            SETUP + "print(json.dumps(settings.SECRET_KEY_FALLBACKS))",
            _env(tmp_path, BSN_SECRET_KEY=STRONG_KEY, BSN_SECRET_KEY_FALLBACKS_FILE=str(keys)),
        )
        assert json.loads(out.splitlines()[-1]) == ["first-old-key", "second-old-key"]


def _deploy_check(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess:
    env = _env(tmp_path, BSN_SECRET_KEY=STRONG_KEY, BSN_ALLOWED_HOSTS="bsn.example.com", **extra)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


HTTPS_SETTINGS = (
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_PROXY_SSL_HEADER",
)


def _https_settings(tmp_path: Path, **extra: str) -> dict:
    code = SETUP + f"print(json.dumps({{k: getattr(settings, k, None) for k in {HTTPS_SETTINGS!r}}}))"
    return json.loads(_python(code, _env(tmp_path, BSN_SECRET_KEY=STRONG_KEY, **extra)))


class TestHttpsSwitch:
    def test_deploy_check_passes_with_the_switch(self, tmp_path):
        proc = _deploy_check(tmp_path, BSN_HTTPS="true")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "no issues" in proc.stdout

    def test_deploy_check_fails_without_it(self, tmp_path):
        proc = _deploy_check(tmp_path)
        assert proc.returncode != 0
        for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
            assert warning in proc.stderr + proc.stdout

    def test_the_switch_turns_everything_on(self, tmp_path):
        on = _https_settings(tmp_path, BSN_HTTPS="true")
        assert on == {
            "SECURE_SSL_REDIRECT": True,
            "SECURE_HSTS_SECONDS": 31_536_000,
            "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
            "SESSION_COOKIE_SECURE": True,
            "CSRF_COOKIE_SECURE": True,
            "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        }
        off = _https_settings(tmp_path)
        assert off["SECURE_SSL_REDIRECT"] is False and off["SECURE_HSTS_SECONDS"] == 0
        assert off["SECURE_PROXY_SSL_HEADER"] is None

    def test_each_part_can_be_set_on_its_own(self, tmp_path):
        # TLS ends at this process (no proxy header), HSTS kept short while trying it out.
        parts = _https_settings(tmp_path, BSN_HTTPS="true", BSN_PROXY_SSL_HEADER="false", BSN_HSTS_SECONDS="300")
        assert parts["SECURE_PROXY_SSL_HEADER"] is None and parts["SECURE_HSTS_SECONDS"] == 300
        only_cookies = _https_settings(tmp_path, BSN_SESSION_COOKIE_SECURE="true")
        assert only_cookies["SESSION_COOKIE_SECURE"] is True and only_cookies["SECURE_SSL_REDIRECT"] is False
        proc = _deploy_check(tmp_path, BSN_HTTPS="true", BSN_HSTS_SECONDS="0")
        assert proc.returncode != 0 and "security.W004" in proc.stderr + proc.stdout

    @pytest.mark.parametrize("value", ["maybe", "2"])
    def test_a_bad_value_fails_fast(self, tmp_path, value):
        proc = subprocess.run(
            [sys.executable, "-c", SETUP],
            cwd=ROOT,
            env=_env(tmp_path, BSN_HTTPS=value),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode != 0 and "ImproperlyConfigured" in proc.stderr and "BSN_HTTPS" in proc.stderr


@pytest.mark.django_db
class TestHttpsBehaviour:
    """What a browser sees with the settings BSN_HTTPS=true turns on (behind a TLS proxy)."""

    @pytest.fixture
    def https(self, settings):
        settings.SECURE_SSL_REDIRECT = True
        settings.SECURE_HSTS_SECONDS = 31_536_000
        settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
        settings.SECURE_HSTS_PRELOAD = True
        settings.SESSION_COOKIE_SECURE = True
        settings.CSRF_COOKIE_SECURE = True
        settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

    def test_plain_http_is_redirected_but_probes_are_not(self, https, client):
        resp = client.get("/api/v1/regions")
        assert resp.status_code == 301 and resp["Location"].startswith("https://")
        assert client.get("/healthz").status_code == 200

    def test_https_answers_carry_hsts_and_secure_cookies(self, https, client):
        resp = client.get("/admin/login/", HTTP_X_FORWARDED_PROTO="https")
        assert resp.status_code == 200
        assert resp["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
        assert resp.cookies["csrftoken"]["secure"]

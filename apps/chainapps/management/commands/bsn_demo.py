"""bsn_demo — seed three regions, the built-in framework and a demo tenant; print the logins and a token.

The first run creates the operator (Django admin) and the demo tenant owner, each with its
own random password, and a demo API token. Later runs keep them: a password still as
printed (read back from ``--login-file``) is shown again, one changed since is not (the
reset command is printed instead), and the token is reused while it works — a new one
replaces the old demo tokens only when it does not. The login file is 0600 from its first
byte.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from rest_framework.exceptions import ValidationError

from apps.chainapps.models import Framework
from apps.regions.services import DEMO_REGIONS, demo_regions_seed, driver_pick
from apps.tenants.models import ApiToken, Membership, Role, Tenant, token_digest
from apps.tenants.services import token_replace, username_validate

OPERATOR = "admin"
_LINE = re.compile(r"^(operator login|tenant login)[^:]*: (\S+) / (\S+)$|^API token: (bsn_\S+)$")


def _read_login_file(path: Path | None) -> dict[str, str]:
    """What an earlier run printed: {username: password, "token": secret}."""
    known: dict[str, str] = {}
    if path is None or not path.exists():
        return known
    for line in path.read_text().splitlines():
        match = _LINE.match(line.strip())
        if match and match.group(2):
            known[match.group(2)] = match.group(3)
        elif match and match.group(4):
            known["token"] = match.group(4)
    return known


def _write_private(path: Path, text: str) -> None:
    # mkstemp creates the file 0600; the rename replaces the old file (whatever its mode).
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(partial, path)
    except BaseException:
        os.unlink(partial)
        raise


class Command(BaseCommand):
    help = "Seed demo regions and a demo tenant; print the logins and an API token."

    def add_arguments(self, parser):
        parser.add_argument("--driver", choices=["auto", "docker", "process"], default=settings.BSN_DEFAULT_DRIVER)
        parser.add_argument("--username", default="demo")
        parser.add_argument(
            "--login-file", type=Path, help="keep the printed logins here (0600) and reuse them on the next run"
        )

    def handle(self, *args, driver, username, login_file, **options):
        driver = driver_pick(driver)
        try:
            username_validate(username)
        except ValidationError as exc:
            raise CommandError(f"--username {username!r}: {exc.detail['username'][0]}") from exc
        known = _read_login_file(login_file)
        User = get_user_model()
        lines: list[str] = []
        with transaction.atomic():
            demo_regions_seed(driver=driver)
            if not Framework.objects.filter(slug="bsn-ledger").exists():
                self.stderr.write("the built-in framework is missing: run `manage.py migrate`")
            tenant, _ = Tenant.objects.get_or_create(slug="demo", defaults={"name": "Demo Enterprise"})

            operator = User.objects.filter(is_superuser=True).order_by("date_joined").first()
            if operator is None:
                # Its own password: the operator and the tenant owner never share one.
                password = secrets.token_urlsafe(16)
                operator = User.objects.create_superuser(OPERATOR, f"{OPERATOR}@example.test", password)
                known[operator.username] = password
            lines.append(self._login_line("operator login (Django admin /admin/)", operator, known))

            user = User.objects.filter(username=username).first()
            if user is None:
                password = secrets.token_urlsafe(12)
                user = User.objects.create_user(username, f"{username}@example.test", password)
                known[username] = password
            membership, _ = Membership.objects.get_or_create(tenant=tenant, user=user, defaults={"role": Role.OWNER})

            secret = known.get("token")
            reusable = (
                secret
                and ApiToken.objects.usable()
                .filter(membership=membership, name="demo", digest=token_digest(secret))
                .exists()
            )
            if not reusable:
                secret = token_replace(membership=membership, name="demo").secret
        lines.append(f"regions: {', '.join(c for c, _, _ in DEMO_REGIONS)} (driver: {driver})")
        lines.append(self._login_line("tenant login", user, known))
        lines.append(f"API token: {secret}")
        manage = f"BSN_DATA_DIR={settings.DATA_DIR} .venv/bin/python manage.py"
        lines.append(f"forgot a password? {manage} changepassword {operator.username}  (or {user.username})")
        text = "\n".join(lines) + "\n"
        if login_file is not None:
            _write_private(login_file, text)
        self.stdout.write(text, ending="")

    @staticmethod
    def _login_line(label: str, user, known: dict[str, str]) -> str:
        password = known.get(user.username)
        if password and user.check_password(password):
            return f"{label}: {user.username} / {password}"
        return (
            f"{label}: {user.username} (password changed since it was printed; "
            f"reset it with `manage.py changepassword {user.username}`)"
        )

"""bsn_demo — seed three regions, the built-in framework and a demo tenant; print a login and a token."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from apps.chainapps.models import Framework
from apps.regions.services import DEMO_REGIONS, demo_regions_seed, driver_pick
from apps.tenants.models import Membership, Role, Tenant
from apps.tenants.services import token_issue


class Command(BaseCommand):
    help = "Seed demo regions and a demo tenant; print the login and an API token."

    def add_arguments(self, parser):
        parser.add_argument("--driver", choices=["auto", "docker", "process"], default=settings.BSN_DEFAULT_DRIVER)
        parser.add_argument("--username", default="demo")

    def handle(self, *args, driver, username, **options):
        driver = driver_pick(driver)
        password = secrets.token_urlsafe(12)
        User = get_user_model()
        with transaction.atomic():
            demo_regions_seed(driver=driver)
            if not Framework.objects.filter(slug="bsn-ledger").exists():
                self.stderr.write("the built-in framework is missing: run `manage.py migrate`")
            tenant, _ = Tenant.objects.get_or_create(slug="demo", defaults={"name": "Demo Enterprise"})
            user = User.objects.filter(username=username).first() or User(username=username)
            user.email = user.email or f"{username}@example.test"
            user.set_password(password)  # the demo login is re-issued on every run
            user.save()
            membership, _ = Membership.objects.get_or_create(tenant=tenant, user=user, defaults={"role": Role.OWNER})
            if not User.objects.filter(is_superuser=True).exists():
                admin = User.objects.create_superuser("admin", "admin@example.test", password)
                self.stdout.write(f"operator login (Django admin /admin/): {admin.username} / {password}")
        issued = token_issue(membership=membership, name="demo")
        self.stdout.write(f"regions: {', '.join(c for c, _, _ in DEMO_REGIONS)} (driver: {driver})")
        self.stdout.write(f"tenant login: {username} / {password}")
        self.stdout.write(f"API token: {issued.secret}")

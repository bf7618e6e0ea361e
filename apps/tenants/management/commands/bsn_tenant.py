"""bsn_tenant create|list|quota|activate|deactivate — manage tenants."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils.text import slugify
from rest_framework.exceptions import APIException

from apps.chainapps.selectors import tenant_usage
from apps.tenants import services
from apps.tenants.models import Membership, Role, Tenant


class Command(BaseCommand):
    help = "Create and list tenants, set quotas."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create")
        create.add_argument("slug")
        create.add_argument("--name", default="")
        create.add_argument("--kind", choices=[c for c, _ in Tenant.Kind.choices], default=Tenant.Kind.ENTERPRISE)
        create.add_argument("--owner", help="username of the owner (created if missing, with --password)")
        create.add_argument("--password", help="password for a new owner user")
        create.add_argument("--email", default="")
        sub.add_parser("list")
        quota = sub.add_parser("quota")
        quota.add_argument("slug")
        for name in ("max_apps", "max_nodes", "max_tps", "max_storage_mb", "max_daily_volume_mb"):
            quota.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int)
        for name in ("activate", "deactivate"):
            sub.add_parser(name, help=f"{name} a tenant (its tokens and logins)").add_argument("slug")

    def handle(self, *args, action, **options):
        try:
            getattr(self, f"do_{action}")(**options)
        except APIException as exc:  # service refusals (duplicate, bad quota) become one line
            raise CommandError(str(exc.detail)) from exc

    def do_create(self, slug, name, kind, owner, password, email, **o):
        if slugify(slug) != slug:
            raise CommandError(f"slug must be lower-case letters, digits and dashes (try {slugify(slug)!r})")
        User = get_user_model()
        with transaction.atomic():
            tenant = services.tenant_create(slug=slug, name=name or slug, kind=kind)
            if owner:
                user = User.objects.filter(username=owner).first()
                if user is None:
                    if not password:
                        raise CommandError(f"user {owner} does not exist: give --password to create it")
                    services.username_validate(owner)  # ASCII only (create_user runs no validators)
                    user = User.objects.create_user(username=owner, email=email, password=password)
                Membership.objects.create(tenant=tenant, user=user, role=Role.OWNER)
        self.stdout.write(f"created tenant {slug} ({kind})" + (f" owned by {owner}" if owner else ""))

    def do_list(self, **o):
        self.stdout.write(f"{'SLUG':<20} {'KIND':<14} {'APPS':>9} {'NODES':>9}  NAME")
        for t in Tenant.objects.all():
            u = tenant_usage(tenant=t)
            apps, nodes = f"{u['apps']}/{t.max_apps}", f"{u['nodes']}/{t.max_nodes}"
            self.stdout.write(f"{t.slug:<20} {t.kind:<14} {apps:>9} {nodes:>9}  {t.name}")

    def do_quota(self, slug, **o):
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            raise CommandError(f"no tenant {slug}")
        quotas = {k: v for k, v in o.items() if k.startswith("max_") and v is not None}
        if quotas:
            if any(v < 0 for v in quotas.values()):
                raise CommandError("quotas must be non-negative")
            services.tenant_set_quota(tenant=tenant, **quotas)
        tenant.refresh_from_db()
        self.stdout.write(
            f"{slug}: apps {tenant.max_apps}, nodes {tenant.max_nodes}, tps {tenant.max_tps}, "
            f"storage {tenant.max_storage_mb} MB, daily volume {tenant.max_daily_volume_mb} MB"
        )

    def _set_active(self, slug: str, active: bool) -> None:
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            raise CommandError(f"no tenant {slug}")
        services.tenant_set_active(tenant=tenant, active=active)  # as the console's actions (audited)
        self.stdout.write(f"{slug} is now {'active' if active else 'inactive'}")

    def do_activate(self, slug, **o):
        self._set_active(slug, True)

    def do_deactivate(self, slug, **o):
        self._set_active(slug, False)

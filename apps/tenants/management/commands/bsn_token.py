"""bsn_token create <username> — issue an API token and print its secret once."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from rest_framework.exceptions import APIException

from apps.tenants.models import Membership
from apps.tenants.services import token_issue


class Command(BaseCommand):
    help = "Issue API tokens."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create")
        create.add_argument("username")
        create.add_argument("--tenant", help="tenant slug, if the user belongs to several")
        create.add_argument("--name", default="cli")
        create.add_argument("--days", type=int, default=None, help="lifetime in days")

    def handle(self, *args, action, username, tenant, name, days, **options):
        memberships = Membership.objects.select_related("tenant", "user").filter(user__username=username)
        if tenant:
            memberships = memberships.filter(tenant__slug=tenant)
        found = list(memberships[:2])
        if not found:
            raise CommandError(f"{username} is not a member of " + (f"tenant {tenant}" if tenant else "any tenant"))
        if len(found) > 1:
            raise CommandError(f"{username} belongs to several tenants: add --tenant")
        if days is not None and not 1 <= days <= 3650:
            raise CommandError("--days must be between 1 and 3650")
        try:
            issued = token_issue(membership=found[0], name=name, ttl_days=days)
        except APIException as exc:
            raise CommandError(str(exc.detail)) from exc
        self.stderr.write(f"token for {username} @ {found[0].tenant.slug}, expires {issued.token.expires_at:%Y-%m-%d}")
        self.stdout.write(issued.secret)

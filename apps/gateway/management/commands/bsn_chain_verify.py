"""bsn_chain_verify — check an app's chain end to end: hashes, Merkle roots, signatures, links, agreement."""

from __future__ import annotations

import uuid

from django.core.management.base import BaseCommand, CommandError

from apps.chainapps.models import ChainApp
from apps.gateway.chainverify import ChainProblem, chain_verify


def find_app(ref: str) -> ChainApp:
    """An app by id, or by ``tenant/name`` (the live app of that name)."""
    try:
        app = ChainApp.objects.filter(pk=uuid.UUID(ref)).first()
    except ValueError:
        tenant, _, name = ref.partition("/")
        if not tenant or not name:
            raise CommandError(f"'{ref}' is neither an app id nor tenant/name") from None
        app = ChainApp.objects.filter(tenant__slug=tenant, name=name, deleted_at__isnull=True).first()
    if app is None:
        raise CommandError(f"no app '{ref}'")
    return app


class Command(BaseCommand):
    help = (
        "Fetch every node's /chain and all blocks from one node; verify each block's hash, Merkle root, "
        "proposer signature (against the node keys in the database) and prev-hash link, and that all nodes "
        "agree on height and head hash. Exit 1 on the first problem."
    )

    def add_arguments(self, parser):
        parser.add_argument("app", help="app id, or tenant-slug/app-name")

    def handle(self, *args, app, **options):
        chain_app = find_app(app)
        try:
            summary = chain_verify(chain_app, progress=self.stdout.write)
        except ChainProblem as exc:
            raise CommandError(f"{chain_app.tenant.slug}/{chain_app.name}: {exc}") from None
        self.stdout.write(
            f"ok: {chain_app.tenant.slug}/{chain_app.name} ({summary.app_id}): {summary.nodes} node(s) agree at "
            f"height {summary.height}, head {summary.head_hash or '-'}; {summary.height} block(s) and "
            f"{summary.transactions} transaction(s) verified"
        )

"""The built-in ledger framework (created by migration 0002; tests re-create it after a flush)."""

from bsn.ledger.contracts import CONTRACTS

BUILTIN_FRAMEWORK = {
    "slug": "bsn-ledger",
    "name": "bsn ledger node",
    "version": "0.2.0",
    "image": "bsn/ledger:latest",
    "command": [],
    "port": 8080,
    "health_path": "/health",
    "default_cpus": 1.0,
    "default_memory_mb": 64,
    "default_pids": 64,
    "contract_templates": list(CONTRACTS),
    "builtin": True,
}


def ensure_builtin_framework(framework_model):
    from django.conf import settings

    # The image the installation runs (BSN_LEDGER_IMAGE): ordering members use it too, and
    # a test run pinned to its own build must not run app nodes from another build's tag.
    fields = {**BUILTIN_FRAMEWORK, "image": settings.BSN_LEDGER_IMAGE}
    slug = fields.pop("slug")
    obj, _ = framework_model.objects.update_or_create(slug=slug, defaults=fields)
    return obj

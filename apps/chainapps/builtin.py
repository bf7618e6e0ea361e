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
    fields = dict(BUILTIN_FRAMEWORK)
    slug = fields.pop("slug")
    obj, _ = framework_model.objects.update_or_create(slug=slug, defaults=fields)
    return obj

"""bsn: a multi-tenant Blockchain-as-a-Service control plane.

Deliberately empty: the ledger node image ships ``bsn/ledger`` with this file and
must not pull in Django or Celery. The Celery app lives in ``bsn.celery``.
"""

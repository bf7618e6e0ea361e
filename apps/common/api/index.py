"""`GET /api/v1/`: where a newcomer starts — the collections, the schema and the docs."""

from __future__ import annotations

from django.http import JsonResponse


def _collections() -> list[str]:
    # Read from the routers themselves, so a new resource is listed without editing this.
    from apps.billing.api.urls import billing_router, tenant_router
    from apps.dcep.api.urls import router as dcep_router
    from bsn.urls import router

    names = [prefix for prefix, _, _ in router.registry if "(?P<" not in prefix]
    names += [f"dcep/{prefix}" for prefix, _, _ in dcep_router.registry]
    names += [f"tenant/{prefix}" for prefix, _, _ in tenant_router.registry]
    names += [f"billing/{prefix}" for prefix, _, _ in billing_router.registry]
    return sorted(set(names) | {"tenant", "tenant/billing", "dcep/chain", "dcep/supply"})


def api_index(request):
    base = request.build_absolute_uri("/api/v1/")
    return JsonResponse(
        {
            "name": "bsn API",
            "version": "v1",
            "authentication": "Authorization: Token <secret> (POST auth/login or POST tokens); see docs",
            "schema": base + "schema",
            "docs": base + "docs",
            "resources": {name: base + name for name in _collections()},
        }
    )

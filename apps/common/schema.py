"""OpenAPI: every operation documents its problem-details error responses."""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import force_instance
from rest_framework import serializers

from apps.common.serializers import StrictInputSerializer


class ProblemSerializer(serializers.Serializer):
    """RFC 9457 problem details."""

    type = serializers.URLField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    code = serializers.CharField()
    instance = serializers.CharField(required=False)
    errors = serializers.JSONField(required=False, help_text="invalid input: {field: [messages]}")


_DESCRIPTIONS = {
    "400": "Invalid input (problem details)",
    "401": "Not authenticated",
    "403": "The caller's role does not allow this",
    "404": "Not found (also for other tenants' objects)",
    "409": "Conflicts with the current state (duplicate, quota, capacity, operation in progress)",
    "422": "Idempotency-Key reused with another request body",
    "429": "Too many requests (see Retry-After)",
    "500": "Unexpected error",
    "502": "The ledger node answered with an error (problem details)",
    "503": "No healthy ledger node, or the ordering service is unavailable (retry)",
    "504": "The ledger node did not answer in time; the outcome is unknown (retry: nonces prevent a double apply)",
}


class ProblemAutoSchema(AutoSchema):
    def _map_serializer(self, serializer, direction, bypass_extensions=False):
        schema = super()._map_serializer(serializer, direction, bypass_extensions)
        # A strict input refuses fields it does not know: say so, so that clients (and
        # schemathesis) do not read "extra properties allowed" into the schema.
        instance = force_instance(serializer)
        if "__doc__" not in type(instance).__dict__ or not type(instance).__doc__:
            schema.pop("description", None)  # not a base class's docstring on every input
        if direction == "request" and isinstance(instance, StrictInputSerializer):
            schema["additionalProperties"] = False
        if direction == "request" and hasattr(instance, "fields"):
            # DRF refuses "" unless allow_blank; drf-spectacular does not write that down.
            for name, field in instance.fields.items():
                prop = schema.get("properties", {}).get(name)
                if isinstance(field, serializers.CharField) and not field.allow_blank and isinstance(prop, dict):
                    if prop.get("type") == "string" and "minLength" not in prop:
                        prop["minLength"] = 1
        return schema

    def _error_codes(self) -> list[str]:
        codes = ["401", "403", "500"]
        if "{" in self.path:
            codes.append("404")
        if self.method in ("POST", "PUT", "PATCH", "DELETE"):
            codes += ["400", "409"]
        if self.method == "GET" and ("{" not in self.path or self._takes_query_parameters()):
            codes.append("400")  # a bad filter, page, page size or range (nested lists too)
        # Views that reach ledger nodes name the extra codes they can answer (also per action).
        codes += [c for c in getattr(self.view, "problem_codes", ()) if c not in codes]
        if self.method in ("POST", "PUT", "PATCH", "DELETE"):  # e.g. 422 of an Idempotency-Key
            codes += [c for c in getattr(self.view, "write_problem_codes", ()) if c not in codes]
        by_action = getattr(self.view, "action_problem_codes", {}).get(getattr(self.view, "action", None), ())
        codes += [c for c in by_action if c not in codes]
        return codes

    def _takes_query_parameters(self) -> bool:
        return any(p.get("in") == "query" for p in self._get_parameters())

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if not self.path.startswith("/api/"):
            return responses
        component = self.resolve_serializer(ProblemSerializer, "response")
        for code in self._error_codes():
            responses.setdefault(
                code,
                {
                    "description": _DESCRIPTIONS[code],
                    "content": {"application/problem+json": {"schema": component.ref}},
                },
            )
        return responses


def one_spelling_per_path(result, generator, request, public):
    """Every route answers with and without the trailing slash; the schema (and the docs)
    write each path once, without it."""
    result["paths"] = {(p.rstrip("/") or "/"): ops for p, ops in result["paths"].items()}
    return result


# --------------------------------------------------------------------------- links
#
# OpenAPI links: what a client (and schemathesis's stateful phase) can do next with what
# an answer created. drf-spectacular has no per-response links, so they are added here as
# one table: (producer operationId, status) -> {consumer operationId: parameters}, each
# parameter a runtime expression. ``add_links`` refuses a link to an operation, a status
# or a parameter the schema does not have, so the table cannot silently go stale.

_APP = {"id": "$response.body#/app"}
_APP_CHILD = {"app_id": "$response.body#/app"}
_ITS_ID = {"id": "$response.body#/id"}  # the object the answer is (an operation, a member, …)
_IN_APP = {"app_id": "$request.path.app_id", "id": "$response.body#/id"}

_OPERATION_CONSUMERS = {
    "operations_retrieve": _ITS_ID,
    "operations_cancel_create": _ITS_ID,
    "apps_retrieve": _APP,
    "apps_nodes_list": _APP,
}
_APP_CONSUMERS = {
    **_OPERATION_CONSUMERS,  # an app create answers with its provisioning operation
    **{
        op: _APP
        for op in (
            "apps_partial_update",
            "apps_destroy",
            "apps_usage_retrieve",
            "apps_chain_retrieve",
            "apps_start_create",
            "apps_stop_create",
            "apps_scale_create",
            "apps_upgrade_create",
            "apps_rotate_credentials_create",
            "apps_transactions_create",
        )
    },
    **{
        op: _APP_CHILD
        for op in (
            "apps_users_list",
            "apps_users_create",
            "apps_webhooks_list",
            "apps_webhooks_create",
        )
    },
}

LINKS: dict[tuple[str, str], dict[str, dict[str, str]]] = {
    ("apps_create", "202"): _APP_CONSUMERS,
    **{
        (op, "202"): _OPERATION_CONSUMERS
        for op in (
            "apps_start_create",
            "apps_stop_create",
            "apps_scale_create",
            "apps_upgrade_create",
            "apps_rotate_credentials_create",
            "apps_destroy",
        )
    },
    ("apps_users_create", "201"): {
        op: _IN_APP
        for op in (
            "apps_users_retrieve",
            "apps_users_destroy",
            "apps_users_transactions_create",
            "apps_users_export_create",
        )
    },
    ("apps_webhooks_create", "201"): {
        **{op: _IN_APP for op in ("apps_webhooks_retrieve", "apps_webhooks_partial_update", "apps_webhooks_destroy")},
        "apps_webhooks_deliveries_list": {"app_id": "$request.path.app_id", "webhook_id": "$response.body#/id"},
    },
    ("tenant_members_create", "201"): {
        op: _ITS_ID for op in ("tenant_members_retrieve", "tenant_members_partial_update", "tenant_members_destroy")
    },
    ("tokens_create", "201"): {"tokens_retrieve": _ITS_ID},
    ("dcep_wallets_create", "201"): {op: _ITS_ID for op in ("dcep_wallets_retrieve", "dcep_wallets_partial_update")},
    ("dcep_holds_create", "201"): {
        op: _ITS_ID for op in ("dcep_holds_retrieve", "dcep_holds_capture_create", "dcep_holds_void_create")
    },
    ("dcep_payments_create", "201"): {
        op: _ITS_ID for op in ("dcep_transfers_retrieve", "dcep_transfers_proof_retrieve")
    },
    ("dcep_settlements_create", "202"): {"dcep_settlements_retrieve": _ITS_ID},
}


def add_links(result, generator, request, public):
    """Write ``LINKS`` into the responses they belong to (a postprocessing hook)."""
    operations = {
        op["operationId"]: op for ops in result["paths"].values() for op in ops.values() if isinstance(op, dict)
    }
    for (producer, status), consumers in LINKS.items():
        if producer not in operations:
            raise ValueError(f"schema links: no operation {producer}")
        response = operations[producer].get("responses", {}).get(status)
        if response is None:
            raise ValueError(f"schema links: {producer} documents no {status}")
        links = response.setdefault("links", {})
        for consumer, parameters in consumers.items():
            target = operations.get(consumer)
            if target is None:
                raise ValueError(f"schema links: {producer} links to no operation {consumer}")
            known = {p["name"] for p in target.get("parameters", []) if p.get("in") == "path"}
            if not set(parameters) <= known:
                raise ValueError(f"schema links: {consumer} has no path parameter {set(parameters) - known}")
            links[consumer] = {"operationId": consumer, "parameters": dict(parameters)}
    return result

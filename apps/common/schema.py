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

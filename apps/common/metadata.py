"""`OPTIONS` on any API path: what the resource is and where its contract is written.

DRF's SimpleMetadata describes each action's serializer, which needs a ``serializer_class``
the views here do not have (each action names its own input and output serializers) and
answered 500. The OpenAPI schema is the one description of the inputs; point to it.
"""

from rest_framework.metadata import BaseMetadata


class SchemaMetadata(BaseMetadata):
    def determine_metadata(self, request, view):
        return {
            "name": view.get_view_name(),
            "description": view.get_view_description(),
            "allowed_methods": view.allowed_methods,
            "schema": request.build_absolute_uri("/api/v1/schema"),
        }

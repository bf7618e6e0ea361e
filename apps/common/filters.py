"""Query filters that refuse what their schema does not allow.

django-filter reads an empty value as "no filter" (kept for text filters), takes the last of a repeated parameter,
``1``/``0``/``null`` for a boolean and ``0.5`` for an integer field, and answers the
unfiltered list: a typo silently returns everything. Here a filter parameter that is
empty, repeated or not of its documented type is a 400 ``invalid-filter`` naming it.
"""

from __future__ import annotations

import re

import django_filters
from django.db import models
from django_filters.rest_framework import DjangoFilterBackend

from apps.common.errors import DomainError

_INTEGER = re.compile(r"^-?[0-9]+\Z")


def _problem(filter_, raw: str, model) -> str | None:
    if raw == "":
        # Text filters take "" as "no filter" (their schema allows it); a typed one cannot.
        plain_text = isinstance(filter_, django_filters.CharFilter) and not isinstance(
            filter_, django_filters.ChoiceFilter
        )
        return None if plain_text else "must not be empty (leave the parameter out to not filter)"
    if isinstance(filter_, django_filters.BooleanFilter) and raw not in ("true", "false"):
        return "true or false"
    if isinstance(filter_, django_filters.NumberFilter):
        field = _model_field(model, filter_.field_name)
        if isinstance(field, models.IntegerField) and not _INTEGER.match(raw):
            return "a whole number"
    return None


def _model_field(model, name: str):
    try:
        return model._meta.get_field(name)
    except Exception:  # noqa: BLE001 - a filter across relations: no simple field to check
        return None


class StrictFilterBackend(DjangoFilterBackend):
    def filter_queryset(self, request, queryset, view):
        filterset_class = self.get_filterset_class(view, queryset)
        if filterset_class is not None:
            errors = {}
            for name, filter_ in filterset_class.base_filters.items():
                values = request.query_params.getlist(name)
                if len(values) > 1:
                    errors[name] = ["give this parameter once"]
                elif values and (problem := _problem(filter_, values[0], filterset_class._meta.model)):
                    errors[name] = [problem]
            if errors:
                first = next(iter(errors))
                raise DomainError(f"{first}: {errors[first][0]}", code="invalid-filter", extra={"errors": errors})
        return super().filter_queryset(request, queryset, view)

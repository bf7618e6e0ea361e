from django.core.paginator import Page
from rest_framework.pagination import PageNumberPagination
from rest_framework.utils.urls import replace_query_param

from apps.common.errors import DomainError


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 200

    def paginate_queryset(self, queryset, request, view=None):
        """``page`` is a whole number from 1 (else 400 ``invalid-page``); a page past the last
        is empty (200, ``results: []``, ``count`` still the total), as the schema says —
        DRF's default answers both with a 404 "Invalid page." that no schema documents."""
        self.request = request
        page_size = self.get_page_size(request)
        paginator = self.django_paginator_class(queryset, page_size)
        raw = request.query_params.get(self.page_query_param) or "1"
        if raw in self.last_page_strings:
            number = paginator.num_pages
        else:
            number = int(raw) if raw.isascii() and raw.isdigit() else 0
            if number < 1:
                raise DomainError(
                    "page must be a whole number from 1",
                    code="invalid-page",
                    extra={"errors": {self.page_query_param: ["a whole number from 1"]}},
                )
        self.page = paginator.page(number) if number <= paginator.num_pages else Page([], number, paginator)
        return list(self.page)

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        size = int(raw) if raw.isascii() and raw.isdigit() else 0
        if not 1 <= size <= self.max_page_size:
            raise DomainError(
                f"page_size must be a whole number from 1 to {self.max_page_size}",
                code="invalid-page-size",
                extra={"errors": {self.page_size_query_param: [f"a whole number from 1 to {self.max_page_size}"]}},
            )
        return size

    def get_previous_link(self):
        if self.page.number > self.page.paginator.num_pages:  # past the end: back to the last page
            url = self.request.build_absolute_uri()
            return replace_query_param(url, self.page_query_param, self.page.paginator.num_pages)
        return super().get_previous_link()

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"]["minimum"] = 1
            elif parameter["name"] == self.page_size_query_param:
                parameter["schema"].update({"minimum": 1, "maximum": self.max_page_size})
        return parameters

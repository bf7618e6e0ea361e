"""The API's router: every route works with and without a trailing slash."""

from django.urls import re_path
from rest_framework.routers import SimpleRouter


class OptionalSlashRouter(SimpleRouter):
    """`/api/v1/apps` and `/api/v1/apps/` both work (the spec writes them without)."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


def optional_slash(route: str, view, name: str):
    """A plain route that, like the router's, answers with and without the trailing slash."""
    return re_path(rf"^{route}/?$", view, name=name)

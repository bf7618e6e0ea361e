from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The operator console: the admin's dashboard page (no models of its own)."""

    name = "apps.console"
    label = "console"

    def ready(self) -> None:
        from django.contrib import admin

        # The stock admin index, with the platform's health at the top (templates/console/admin_index.html).
        admin.site.index_template = "console/admin_index.html"
        admin.site.site_header = "bsn operator console"
        admin.site.site_title = "bsn console"
        admin.site.index_title = "Platform administration"

from django.contrib import admin

from apps.regions.models import Region


@admin.register(Region)
class RegionAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "city", "country", "driver", "status", "max_nodes", "last_seen_at"]
    list_filter = ["status", "driver", "country"]
    search_fields = ["code", "name", "city"]
    actions = ["reconcile_now"]
    # TLS material is set with `bsn_region add --tls-*` (checked, then stored encrypted);
    # the admin shows whom the client certificate names, never the PEM texts.
    exclude = ["tls_ca_encrypted", "tls_cert_encrypted", "tls_key_encrypted"]
    readonly_fields = ["engine_tls", "last_seen_at", "last_error", "last_event", "last_event_at"]

    @admin.display(description="engine TLS")
    def engine_tls(self, obj: Region) -> str:
        try:
            tls = obj.tls()
        except ValueError as exc:
            return f"unreadable: {exc}"
        return tls.describe() if tls else "none (local socket or ssh)"

    @admin.action(description="Reconcile the selected regions now")
    def reconcile_now(self, request, queryset):
        from apps.chainapps.admin import reconcile_regions_now

        reconcile_regions_now(self, request, queryset)

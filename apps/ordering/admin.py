"""The ordering service (etcd) in the console: read-only. The control plane provisions,
places and heals the cluster and its members (``bsn_ordering``, the reconciler); every
field here is observed or generated, and credentials are never shown."""

from django.contrib import admin

from apps.common.admin import ReadOnlyAdmin
from apps.ordering.models import AppOrderingCredential, OrderingCluster, OrderingMember


@admin.register(OrderingCluster)
class OrderingClusterAdmin(ReadOnlyAdmin):
    list_display = ("id", "state", "auth_enabled", "last_checked_at", "last_error")
    exclude = ("root_password_encrypted", "peer_ca_key_encrypted")  # never shown, not even encrypted


@admin.register(OrderingMember)
class OrderingMemberAdmin(ReadOnlyAdmin):
    list_display = ("index", "name", "region", "state", "endpoint", "last_seen_at", "last_error")
    list_select_related = ("region",)
    exclude = ("peer_key_encrypted",)
    change_list_template = "console/ordering_change_list.html"

    def changelist_view(self, request, extra_context=None):
        from apps.ordering.selectors import ordering_status

        # Recorded health (probe=False): the reconciler's last look; no etcd call from a page view.
        extra = {"ordering": ordering_status(probe=False), **(extra_context or {})}
        return super().changelist_view(request, extra_context=extra)


@admin.register(AppOrderingCredential)
class AppOrderingCredentialAdmin(ReadOnlyAdmin):
    list_display = ("app", "user", "prefix", "provisioned_at")
    exclude = ("password_encrypted",)

from rest_framework import mixins, serializers

from apps.audit.models import AuditEvent
from apps.common.viewsets import TenantScopedViewSet


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "sequence",
            "actor_label",
            "action",
            "object_type",
            "object_id",
            "data",
            "source_ip",
            "created_at",
            "prev_hash",
            "hash",
        ]


class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer
    filterset_fields = ["action", "object_type", "object_id"]

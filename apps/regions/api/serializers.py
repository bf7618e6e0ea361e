from rest_framework import serializers

from apps.regions.models import Region


class RegionSerializer(serializers.ModelSerializer):
    node_count = serializers.IntegerField(read_only=True)
    warm_ready = serializers.IntegerField(
        read_only=True, help_text="Warm nodes ready to be claimed (docs/provisioning.md, Warm nodes)."
    )
    queue = serializers.CharField(read_only=True)

    class Meta:
        model = Region
        fields = [
            "code",
            "name",
            "city",
            "country",
            "operator",
            "driver",
            "status",
            "max_nodes",
            "node_count",
            "warm_nodes",
            "warm_ready",
            "cpu_capacity",
            "memory_capacity_mb",
            "queue",
            "last_seen_at",
        ]

from rest_framework import serializers

from apps.regions.models import Region


class RegionSerializer(serializers.ModelSerializer):
    node_count = serializers.IntegerField(read_only=True)
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
            "cpu_capacity",
            "memory_capacity_mb",
            "queue",
            "last_seen_at",
        ]

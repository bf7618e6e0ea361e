from rest_framework import serializers


class StrictInputSerializer(serializers.Serializer):
    """Input serializer that refuses fields it does not know (typos never pass silently)."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: "unknown field" for name in unknown})
        return super().to_internal_value(data)

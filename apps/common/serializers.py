from rest_framework import serializers


class StrictInputSerializer(serializers.Serializer):
    """Input serializer that refuses fields it does not know (typos never pass silently).

    ``not_here``: fields a caller may well try that are not changed through this input,
    with where or by whom they are changed instead (said in the error, not "unknown")."""

    not_here: dict[str, str] = {}

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: self.not_here.get(name, "unknown field") for name in unknown})
        return super().to_internal_value(data)

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
            # DRF's CharField turns 7 into "7"; the schema says string, so a number is refused.
            not_text = sorted(
                name
                for name, field in self.fields.items()
                if isinstance(field, serializers.CharField)
                and name in data
                and data[name] is not None
                and not isinstance(data[name], str)
            )
            if not_text:
                raise serializers.ValidationError({name: "must be a string" for name in not_text})
        return super().to_internal_value(data)

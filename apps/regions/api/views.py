from rest_framework import viewsets

from apps.chainapps.selectors import regions_with_load
from apps.regions.api.serializers import RegionSerializer


class RegionViewSet(viewsets.ReadOnlyModelViewSet):
    """Node regions are platform-wide: every tenant sees the same catalogue."""

    serializer_class = RegionSerializer
    lookup_field = "code"
    filterset_fields = ["status", "country", "driver"]

    def get_queryset(self):
        return regions_with_load()

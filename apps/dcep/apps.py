from django.apps import AppConfig


class DcepConfig(AppConfig):
    name = "apps.dcep"
    label = "dcep"
    verbose_name = "DCEP settlement"

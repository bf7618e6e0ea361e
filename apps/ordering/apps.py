from django.apps import AppConfig


class OrderingConfig(AppConfig):
    name = "apps.ordering"
    label = "ordering"
    verbose_name = "Ordering service (etcd)"

from django.apps import AppConfig


class CustodyConfig(AppConfig):
    name = "apps.custody"
    label = "custody"

from django.apps import AppConfig


class ChainappsConfig(AppConfig):
    name = "apps.chainapps"
    label = "chainapps"

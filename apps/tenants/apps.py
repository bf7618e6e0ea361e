from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "apps.tenants"
    label = "tenants"

    def ready(self) -> None:
        from apps.tenants import schema  # noqa: F401 - registers the OpenAPI auth extension

        _ascii_usernames()


def _ascii_usernames() -> None:
    """Usernames are ASCII everywhere (admin forms, createsuperuser, full_clean).

    Django's own User accepts any Unicode letter, so ``аdmin`` (Cyrillic ``а``) could sit
    beside ``admin``. Swapping the field's validator is the documented fix short of a
    custom user model, which this project cannot switch to after its first migration.
    """
    from django.contrib.auth import get_user_model
    from django.contrib.auth.validators import ASCIIUsernameValidator, UnicodeUsernameValidator

    field = get_user_model()._meta.get_field("username")
    field.validators[:] = [
        ASCIIUsernameValidator() if isinstance(v, UnicodeUsernameValidator) else v for v in field.validators
    ]

from django.apps import AppConfig


class CommonConfig(AppConfig):
    name = "apps.common"
    label = "common"

    def ready(self) -> None:
        # Bind shared tasks to our Celery app (bsn/__init__.py stays import-free for the
        # ledger image, so the usual "import celery app in the package" lives here).
        import bsn.celery  # noqa: F401

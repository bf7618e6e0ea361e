"""The Celery application. Workers: ``celery -A bsn.celery worker -Q default,region.<code>``."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bsn.settings")

app = Celery("bsn")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

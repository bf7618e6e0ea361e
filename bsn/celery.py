"""The Celery application. Workers: ``celery -A bsn.celery worker -Q default,region.<code>``."""

import os

from celery import Celery
from celery.signals import worker_ready
from kombu.transport import TRANSPORT_ALIASES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bsn.settings")
# The embedded broker (``filesystem://``) with whole-message writes: see apps/common/broker_fs.py.
TRANSPORT_ALIASES["filesystem"] = "apps.common.broker_fs:Transport"

app = Celery("bsn")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def _follow_regions(sender=None, **kwargs):
    from apps.chainapps.workers import on_worker_ready

    on_worker_ready(sender=sender, **kwargs)

"""WSGI entry point (gunicorn bsn.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bsn.settings")
application = get_wsgi_application()

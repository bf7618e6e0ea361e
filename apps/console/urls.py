from django.contrib import admin
from django.urls import path

from apps.console.views import dashboard

urlpatterns = [
    # admin_view: staff only (others get the admin's login page), never cached, CSRF as the admin.
    path("", admin.site.admin_view(dashboard), name="console-dashboard"),
]

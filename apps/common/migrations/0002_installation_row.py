import uuid

from django.db import migrations


def create_installation(apps, schema_editor):
    Installation = apps.get_model("common", "Installation")
    if not Installation.objects.exists():
        Installation.objects.create(id=uuid.uuid4())


class Migration(migrations.Migration):
    dependencies = [("common", "0001_initial")]
    operations = [migrations.RunPython(create_installation, migrations.RunPython.noop)]

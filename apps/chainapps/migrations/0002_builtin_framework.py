from django.db import migrations


def create_builtin(apps, schema_editor):
    from apps.chainapps.builtin import ensure_builtin_framework

    ensure_builtin_framework(apps.get_model("chainapps", "Framework"))


class Migration(migrations.Migration):
    dependencies = [("chainapps", "0001_initial")]
    operations = [migrations.RunPython(create_builtin, migrations.RunPython.noop)]

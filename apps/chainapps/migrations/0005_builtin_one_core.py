from django.db import migrations


def update_builtin(apps, schema_editor):
    from apps.chainapps.builtin import ensure_builtin_framework

    ensure_builtin_framework(apps.get_model("chainapps", "Framework"))


class Migration(migrations.Migration):
    """A built-in ledger node may use one core (it was capped at half of one)."""

    dependencies = [("chainapps", "0004_builtin_contracts")]
    operations = [migrations.RunPython(update_builtin, migrations.RunPython.noop)]

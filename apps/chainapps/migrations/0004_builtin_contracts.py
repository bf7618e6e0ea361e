from django.db import migrations


def update_builtin(apps, schema_editor):
    from apps.chainapps.builtin import ensure_builtin_framework

    ensure_builtin_framework(apps.get_model("chainapps", "Framework"))


class Migration(migrations.Migration):
    """The signed ledger node (0.2.0) offers every built-in contract template."""

    dependencies = [("chainapps", "0003_keys_ordering_chain")]
    operations = [migrations.RunPython(update_builtin, migrations.RunPython.noop)]

from django.db import migrations


def create_builtin(apps, schema_editor):
    Framework = apps.get_model("chainapps", "Framework")
    Framework.objects.update_or_create(
        slug="bsn-ledger",
        defaults={
            "name": "bsn ledger node",
            "version": "0.1.0",
            "image": "bsn/ledger:latest",
            "command": [],
            "port": 8080,
            "health_path": "/health",
            "default_cpus": 0.5,
            "default_memory_mb": 64,
            "default_pids": 64,
            "contract_templates": ["kv"],
            "builtin": True,
        },
    )


class Migration(migrations.Migration):
    dependencies = [("chainapps", "0001_initial")]
    operations = [migrations.RunPython(create_builtin, migrations.RunPython.noop)]

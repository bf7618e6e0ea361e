"""TLS material of remote engines moves from file paths into the row, encrypted."""

from pathlib import Path

from django.db import migrations, models


def files_into_row(apps, schema_editor):
    from apps.common.crypto import encrypt_secret

    Region = apps.get_model("regions", "Region")
    for region in Region.objects.exclude(tls_ca_file="", tls_cert_file="", tls_key_file=""):
        for old, new in (("tls_ca_file", "tls_ca_encrypted"), ("tls_cert_file", "tls_cert_encrypted"),
                         ("tls_key_file", "tls_key_encrypted")):
            path = getattr(region, old).strip()
            if path:
                # A path that no longer exists fails the migration loudly rather than
                # leaving a region that silently talks to its engine without TLS.
                setattr(region, new, encrypt_secret(Path(path).read_text()))
        region.save(update_fields=["tls_ca_encrypted", "tls_cert_encrypted", "tls_key_encrypted"])


class Migration(migrations.Migration):

    dependencies = [
        ("regions", "0002_region_last_event"),
    ]

    operations = [
        migrations.AddField(model_name="region", name="tls_ca_encrypted", field=models.TextField(blank=True)),
        migrations.AddField(model_name="region", name="tls_cert_encrypted", field=models.TextField(blank=True)),
        migrations.AddField(model_name="region", name="tls_key_encrypted", field=models.TextField(blank=True)),
        migrations.RunPython(files_into_row, migrations.RunPython.noop),
        migrations.RemoveField(model_name="region", name="tls_ca_file"),
        migrations.RemoveField(model_name="region", name="tls_cert_file"),
        migrations.RemoveField(model_name="region", name="tls_key_file"),
    ]

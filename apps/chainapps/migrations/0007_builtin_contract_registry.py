from django.db import migrations


def update_builtin(apps, schema_editor):
    from apps.chainapps.builtin import BUILTIN_FRAMEWORK

    # Only the templates: the registry (bsn.ledger.contracts.CONTRACTS) as of this code.
    Framework = apps.get_model("chainapps", "Framework")
    Framework.objects.filter(slug=BUILTIN_FRAMEWORK["slug"]).update(
        contract_templates=BUILTIN_FRAMEWORK["contract_templates"]
    )


class Migration(migrations.Migration):
    """The built-in framework's stored templates are the contract registry's (bsn.ledger.contracts)."""

    dependencies = [("chainapps", "0006_node_host_port")]
    operations = [migrations.RunPython(update_builtin, migrations.RunPython.noop)]

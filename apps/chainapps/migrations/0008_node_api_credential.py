"""Each ledger node's own API credential (docs/ledger-protocol.md, "Node authentication").

Existing nodes get one now, and a new generation: their containers were created with
secrets in the environment and no credential, so the next start (or upgrade) recreates
them with the credential and every secret as a file. Until then the control plane cannot
verify their answers and counts them as not healthy.
"""

from django.db import migrations, models
from django.db.models import F


def give_existing_nodes_a_credential(apps, schema_editor):
    from apps.common.crypto import encrypt_secret
    from bsn.ledger.auth import generate_credential

    LedgerNode = apps.get_model("chainapps", "LedgerNode")
    for pk in LedgerNode.objects.filter(api_credential_encrypted="").values_list("pk", flat=True):
        LedgerNode.objects.filter(pk=pk).update(
            api_credential_encrypted=encrypt_secret(generate_credential()), generation=F("generation") + 1
        )


class Migration(migrations.Migration):
    dependencies = [
        ("chainapps", "0007_builtin_contract_registry"),
    ]

    operations = [
        migrations.AddField(
            model_name="ledgernode",
            name="api_credential_encrypted",
            field=models.TextField(blank=True),
        ),
        migrations.RunPython(give_existing_nodes_a_credential, migrations.RunPython.noop),
    ]

"""On PostgreSQL the database itself keeps the journal immutable.

Entries refuse UPDATE and DELETE. Transfers refuse DELETE, and UPDATE except setting
``settlement_id`` once (from NULL) — the one change a settlement batch makes.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION dcep_entry_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'dcep journal entries are immutable';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER dcep_entry_no_change BEFORE UPDATE OR DELETE ON dcep_entry
    FOR EACH ROW EXECUTE FUNCTION dcep_entry_immutable();

CREATE OR REPLACE FUNCTION dcep_transfer_immutable() RETURNS trigger AS $$
DECLARE
    changed dcep_transfer%ROWTYPE;
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'dcep transfers are immutable';
    END IF;
    changed := NEW;
    changed.settlement_id := OLD.settlement_id;
    IF OLD.settlement_id IS NOT NULL OR changed IS DISTINCT FROM OLD THEN
        RAISE EXCEPTION 'dcep transfers are immutable (only settlement_id is set, once)';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER dcep_transfer_no_change BEFORE UPDATE OR DELETE ON dcep_transfer
    FOR EACH ROW EXECUTE FUNCTION dcep_transfer_immutable();
"""
DROP = """
DROP TRIGGER IF EXISTS dcep_entry_no_change ON dcep_entry;
DROP FUNCTION IF EXISTS dcep_entry_immutable();
DROP TRIGGER IF EXISTS dcep_transfer_no_change ON dcep_transfer;
DROP FUNCTION IF EXISTS dcep_transfer_immutable();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("dcep", "0001_initial")]
    operations = [migrations.RunPython(forwards, backwards)]

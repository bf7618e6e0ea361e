"""On PostgreSQL the database keeps an issued invoice as it was issued.

Invoice lines refuse UPDATE (except the app reference going to NULL when an app row is
removed) and DELETE. Invoices refuse DELETE, and UPDATE of what was billed: tenant, month,
number, currency, amounts, issue and due dates. Only the payment state changes.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION billing_line_immutable() RETURNS trigger AS $$
DECLARE
    changed billing_invoiceline%ROWTYPE;
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'billing invoice lines are immutable';
    END IF;
    changed := NEW;
    changed.app_id := OLD.app_id;
    IF changed IS DISTINCT FROM OLD OR (NEW.app_id IS NOT NULL AND NEW.app_id IS DISTINCT FROM OLD.app_id) THEN
        RAISE EXCEPTION 'billing invoice lines are immutable';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER billing_line_no_change BEFORE UPDATE OR DELETE ON billing_invoiceline
    FOR EACH ROW EXECUTE FUNCTION billing_line_immutable();

CREATE OR REPLACE FUNCTION billing_invoice_immutable() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'billing invoices are never deleted';
    END IF;
    IF (NEW.tenant_id, NEW.month, NEW.number, NEW.currency, NEW.total_fen, NEW.operator_share_fen,
        NEW.issued_at, NEW.due_at)
       IS DISTINCT FROM
       (OLD.tenant_id, OLD.month, OLD.number, OLD.currency, OLD.total_fen, OLD.operator_share_fen,
        OLD.issued_at, OLD.due_at) THEN
        RAISE EXCEPTION 'an issued invoice never changes (only its payment state)';
    END IF;
    IF OLD.status = 'paid' AND NEW.status <> 'paid' THEN
        RAISE EXCEPTION 'a paid invoice stays paid';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER billing_invoice_no_change BEFORE UPDATE OR DELETE ON billing_invoice
    FOR EACH ROW EXECUTE FUNCTION billing_invoice_immutable();
"""
DROP = """
DROP TRIGGER IF EXISTS billing_line_no_change ON billing_invoiceline;
DROP FUNCTION IF EXISTS billing_line_immutable();
DROP TRIGGER IF EXISTS billing_invoice_no_change ON billing_invoice;
DROP FUNCTION IF EXISTS billing_invoice_immutable();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunPython(forwards, backwards)]

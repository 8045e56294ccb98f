"""On PostgreSQL, refuse UPDATE and DELETE on the audit table at the database level.

The model refuses them too, but raw SQL, a shell or a bulk queryset call would not pass
through the model. TRUNCATE is left to the table owner on purpose: test databases are flushed
with it, and in production the application role should not own the table (see
docs/ARCHITECTURE.md).
"""
from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION reviewdesk_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'workflows_auditevent is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER workflows_auditevent_no_update_delete
    BEFORE UPDATE OR DELETE ON workflows_auditevent
    FOR EACH ROW EXECUTE FUNCTION reviewdesk_audit_append_only();
"""

DROP = """
DROP TRIGGER IF EXISTS workflows_auditevent_no_update_delete ON workflows_auditevent;
DROP FUNCTION IF EXISTS reviewdesk_audit_append_only();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("workflows", "0001_initial")]
    operations = [migrations.RunPython(forwards, backwards)]

"""One statement appends audit events to the chain on PostgreSQL (workflows.audit._append).

The chain lock serialises every writer of the audit table. Taken from Python, it is held over
three client round trips (lock, read head, insert) and whatever the writing thread waits for
between them (the GIL, under a busy thread pool). This function takes the lock, reads the
head, hashes and inserts inside the server, so the lock is held for one statement and COMMIT.
The hash is the same SHA-256 over ``prev_hash || canonical JSON`` that verify_chain recomputes
in Python; the canonical JSON of each event is computed in Python and passed in.

Each statement of a VOLATILE PL/pgSQL function takes a new snapshot, so the head is read after
the lock is granted (one SELECT doing both would read it from a snapshot taken before).
"""
from django.db import migrations

CREATE = r"""
CREATE OR REPLACE FUNCTION reviewdesk_audit_append(lock_key bigint, canonical text[], events jsonb)
RETURNS TABLE(event_id bigint, event_prev_hash text, event_hash text) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  head text;
  i int := 0;
  e record;
  digest text;
  new_id bigint;
BEGIN
  PERFORM pg_advisory_xact_lock(lock_key);
  SELECT a.hash INTO head FROM workflows_auditevent a ORDER BY a.id DESC LIMIT 1;
  head := coalesce(head, repeat('0', 64));
  FOR e IN SELECT * FROM jsonb_to_recordset(events) AS x(
      created_at timestamptz, actor_id integer, actor_label text, action text, object_type text,
      object_id text, workflow_version_id bigint, payload jsonb, request_id text, ip inet)
  LOOP
    i := i + 1;
    digest := encode(sha256(convert_to(head || canonical[i], 'UTF8')), 'hex');
    INSERT INTO workflows_auditevent (created_at, actor_id, actor_label, action, object_type, object_id,
        workflow_version_id, payload, request_id, ip, prev_hash, hash)
      VALUES (e.created_at, e.actor_id, e.actor_label, e.action, e.object_type, e.object_id,
        e.workflow_version_id, e.payload, e.request_id, e.ip, head, digest)
      RETURNING id INTO new_id;
    event_id := new_id;
    event_prev_hash := head;
    event_hash := digest;
    RETURN NEXT;
    head := digest;
  END LOOP;
END $$;
"""
DROP = "DROP FUNCTION IF EXISTS reviewdesk_audit_append(bigint, text[], jsonb)"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("workflows", "0003_pipeline_calls_costs")]
    operations = [migrations.RunPython(create, drop)]

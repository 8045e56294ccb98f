"""The audit chain without a global lock on the write path (issue 7, design (b)).

Before: every append took one advisory lock, read the head and inserted the hashed event, the
lock held until the writer's COMMIT (migration 0004) - every writer of the database queued
behind it. Now:

* an event is INSERTed unchained (``seq``, ``prev_hash``, ``hash`` null) in the transaction of
  the change it records: no lock, no head read;
* ONE chainer at a time (workflows.audit.chain_pending) links the committed unchained events in
  id order through ``reviewdesk_audit_chain``: it takes the chain lock, reads the head, and gives
  each event the next ``seq``, the head as ``prev_hash`` and ``sha256(prev_hash || canonical)`` as
  ``hash``. The chain's order is ``seq``: an event with a lower id that commits after a higher one
  was chained simply gets a later seq.

``reviewdesk_audit_chain`` is SECURITY DEFINER, owned by the owner role, with a pinned
search_path: the runtime role gets EXECUTE on it (workflows/db_roles.py) and still has no UPDATE
on the table. The trigger refuses every UPDATE except exactly that one (seq, prev_hash and hash
set once from NULL, every other column unchanged) and every DELETE; a second trigger refuses an
INSERT that arrives already linked unless the inserting role owns the table (a runtime role
cannot push a row into the chain past the chainer).

Existing events keep their hashes; they get seq = their rank in id order (the order they were
chained in), so existing anchors (event id, hash, count) and exports keep verifying.
"""
from django.conf import settings
from django.db import migrations, models

# The chain lock's key (workflows.audit._CHAIN_LOCK_KEY): the function takes it itself, so a
# caller cannot pass another key and chain beside a running chainer.
LOCK_KEY = 7_302_114_001

TRIGGER_FUNCTION = r"""
CREATE OR REPLACE FUNCTION reviewdesk_audit_append_only() RETURNS trigger AS $$
BEGIN
    -- The one UPDATE allowed: the chainer linking an unchained event, once, nothing else changed.
    IF TG_OP = 'UPDATE'
       AND OLD.seq IS NULL AND OLD.prev_hash IS NULL AND OLD.hash IS NULL
       AND NEW.seq IS NOT NULL AND NEW.prev_hash IS NOT NULL AND NEW.hash IS NOT NULL
       AND (to_jsonb(NEW) - 'seq' - 'prev_hash' - 'hash') = (to_jsonb(OLD) - 'seq' - 'prev_hash' - 'hash')
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'workflows_auditevent is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION reviewdesk_audit_insert_unchained() RETURNS trigger AS $$
BEGIN
    IF (NEW.seq IS NOT NULL OR NEW.prev_hash IS NOT NULL OR NEW.hash IS NOT NULL)
       AND NOT pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE') THEN
        RAISE EXCEPTION 'workflows_auditevent: events are inserted unchained; only the chainer links them'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS workflows_auditevent_insert_unchained ON workflows_auditevent;
CREATE TRIGGER workflows_auditevent_insert_unchained
    BEFORE INSERT ON workflows_auditevent
    FOR EACH ROW EXECUTE FUNCTION reviewdesk_audit_insert_unchained();
"""

CHAIN_FUNCTION = r"""
CREATE OR REPLACE FUNCTION reviewdesk_audit_chain(ids bigint[], canonical text[])
RETURNS TABLE(event_id bigint, event_seq bigint, event_prev_hash text, event_hash text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
DECLARE
  head text;
  head_seq bigint;
  digest text;
  n int := coalesce(array_length(ids, 1), 0);
  todo int[];
  k int;
  out_ids bigint[] := '{{}}';
  out_seqs bigint[] := '{{}}';
  out_prevs text[] := '{{}}';
  out_hashes text[] := '{{}}';
BEGIN
  IF n <> coalesce(array_length(canonical, 1), 0) THEN
    RAISE EXCEPTION 'reviewdesk_audit_chain: % ids but % canonical texts', n, coalesce(array_length(canonical, 1), 0);
  END IF;
  -- One chainer at a time, until its COMMIT. Each statement of a VOLATILE function takes a new
  -- snapshot, so what follows is read after the lock is granted (after the last chainer's commit).
  PERFORM pg_advisory_xact_lock({lock_key});
  SELECT a.seq, a.hash INTO head_seq, head FROM workflows_auditevent a
    WHERE a.seq IS NOT NULL ORDER BY a.seq DESC LIMIT 1;
  head_seq := coalesce(head_seq, 0);
  head := coalesce(head, repeat('0', 64));
  -- The given events still unchained, in the order given (one linked meanwhile is skipped).
  SELECT coalesce(array_agg(u.ord::int ORDER BY u.ord), '{{}}') INTO todo
    FROM unnest(ids) WITH ORDINALITY AS u(id, ord) JOIN workflows_auditevent a ON a.id = u.id
    WHERE a.seq IS NULL;
  FOREACH k IN ARRAY todo LOOP
    digest := encode(sha256(convert_to(head || canonical[k], 'UTF8')), 'hex');
    head_seq := head_seq + 1;
    out_ids := out_ids || ids[k];
    out_seqs := out_seqs || head_seq;
    out_prevs := out_prevs || head;
    out_hashes := out_hashes || digest;
    head := digest;
  END LOOP;
  -- One statement links them all (the trigger checks each row: links set once, nothing else).
  UPDATE workflows_auditevent a SET seq = u.seq, prev_hash = u.prev, hash = u.digest
    FROM unnest(out_ids, out_seqs, out_prevs, out_hashes) AS u(id, seq, prev, digest)
    WHERE a.id = u.id;
  RETURN QUERY SELECT * FROM unnest(out_ids, out_seqs, out_prevs, out_hashes);
END $$;
REVOKE ALL ON FUNCTION reviewdesk_audit_chain(bigint[], text[]) FROM PUBLIC;
"""

OLD_APPEND = "DROP FUNCTION IF EXISTS reviewdesk_audit_append(bigint, text[], jsonb)"


def forwards(apps, schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT quote_ident(current_schema())")
            schema = cursor.fetchone()[0]
            # The existing events, already linked in id order: their rank is their seq. The
            # trigger would refuse the UPDATE; the owner (who runs migrations) disables it for it.
            cursor.execute("ALTER TABLE workflows_auditevent DISABLE TRIGGER workflows_auditevent_no_update_delete")
            cursor.execute(
                "UPDATE workflows_auditevent a SET seq = r.n FROM "
                "(SELECT id, row_number() OVER (ORDER BY id) AS n FROM workflows_auditevent) r WHERE a.id = r.id")
            cursor.execute("ALTER TABLE workflows_auditevent ENABLE TRIGGER workflows_auditevent_no_update_delete")
            cursor.execute(TRIGGER_FUNCTION)
            cursor.execute(OLD_APPEND)
            cursor.execute(CHAIN_FUNCTION.format(schema=schema, lock_key=LOCK_KEY))
        else:
            cursor.execute(
                "UPDATE workflows_auditevent SET seq = (SELECT count(*) FROM workflows_auditevent b "
                "WHERE b.id <= workflows_auditevent.id)")


def _backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    import importlib

    m2 = importlib.import_module("workflows.migrations.0002_audit_append_only_trigger")
    m4 = importlib.import_module("workflows.migrations.0004_audit_append_function")
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM workflows_auditevent WHERE seq IS NULL")
        if cursor.fetchone()[0]:
            raise RuntimeError("unchained audit events: run manage.py chain_audit before migrating back")
        cursor.execute("DROP FUNCTION IF EXISTS reviewdesk_audit_chain(bigint[], text[])")
        cursor.execute("DROP TRIGGER IF EXISTS workflows_auditevent_insert_unchained ON workflows_auditevent")
        cursor.execute("DROP FUNCTION IF EXISTS reviewdesk_audit_insert_unchained()")
        cursor.execute(m2.DROP)
        cursor.execute(m2.CREATE)
        cursor.execute(m4.CREATE)


class Migration(migrations.Migration):

    dependencies = [
        ("workflows", "0011_version_lifecycle"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="seq",
            field=models.BigIntegerField(blank=True, null=True, unique=True),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="hash",
            field=models.CharField(blank=True, max_length=64, null=True, unique=True),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="prev_hash",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(condition=models.Q(("seq__isnull", True)), fields=["id"], name="auditevent_unchained"),
        ),
        migrations.RunPython(forwards, _backwards),
    ]

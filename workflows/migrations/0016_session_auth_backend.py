"""Sessions made before workflows.auth_backends.ModelBackend name Django's ModelBackend as the
backend that logged them in; Django ends a session whose backend is no longer configured, so
without this every signed-in user would be logged out by the upgrade. Rewrites that one value
in each live session (and back, when migrating backwards). Expired sessions are left alone."""
from django.db import migrations

OLD = "django.contrib.auth.backends.ModelBackend"
NEW = "workflows.auth_backends.ModelBackend"
KEY = "_auth_user_backend"  # django.contrib.auth.BACKEND_SESSION_KEY


def _rename(apps, old: str, new: str) -> None:
    from django.contrib.sessions.backends.db import SessionStore
    from django.utils import timezone

    Session = apps.get_model("sessions", "Session")
    store = SessionStore()
    changed = []
    for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator(chunk_size=2000):
        data = store.decode(session.session_data)  # {} for data it cannot read (another key)
        if data.get(KEY) == old:
            data[KEY] = new
            session.session_data = store.encode(data)
            changed.append(session)
        if len(changed) >= 2000:
            Session.objects.bulk_update(changed, ["session_data"])
            changed = []
    Session.objects.bulk_update(changed, ["session_data"])


def forwards(apps, schema_editor):
    _rename(apps, OLD, NEW)


def backwards(apps, schema_editor):
    _rename(apps, NEW, OLD)


class Migration(migrations.Migration):
    dependencies = [
        ("workflows", "0015_notification_purge"),
        ("sessions", "0001_initial"),
    ]

    operations = [migrations.RunPython(forwards, backwards, elidable=True)]

"""Every reviewer decision labels its draft (workflows/labels.py); decisions made before this
migration are labelled from what they stored. An edit whose text an erasure already cleared
keeps no label: its size can no longer be measured."""

from django.db import migrations, models

from workflows import labels


def label_past_decisions(apps, schema_editor):
    ReviewTask = apps.get_model("workflows", "ReviewTask")
    decided = ReviewTask.objects.filter(state="done", label="").select_related("draft", "submission__workflow_version")
    for task in decided.iterator(chunk_size=500):
        distance = None
        if task.decision == "approve":
            distance = 0.0
        elif task.decision == "edit":
            if not task.edited_output:
                continue
            json_output = (task.submission.workflow_version.definition.get("output") or {}).get("format") == "json"
            distance = labels.edit_distance(task.draft.content, task.edited_output, json_output=json_output)
        task.label = labels.label_for(task.decision, distance)
        task.edit_distance = distance
        # A plain UPDATE: relabelling old rows is not a change anyone made, so no history row.
        ReviewTask.objects.filter(pk=task.pk).update(label=task.label, edit_distance=distance)


class Migration(migrations.Migration):

    dependencies = [
        ('workflows', '0008_generation_paused'),
    ]

    operations = [
        migrations.AddField(
            model_name='historicalreviewtask',
            name='edit_distance',
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='historicalreviewtask',
            name='label',
            field=models.CharField(blank=True, choices=[('unchanged', 'unchanged'), ('minor_edit', 'minor edit'), ('major_edit', 'major edit'), ('rejected', 'rejected')], max_length=20),
        ),
        migrations.AddField(
            model_name='reviewtask',
            name='edit_distance',
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='reviewtask',
            name='label',
            field=models.CharField(blank=True, choices=[('unchanged', 'unchanged'), ('minor_edit', 'minor edit'), ('major_edit', 'major edit'), ('rejected', 'rejected')], max_length=20),
        ),
        migrations.RunPython(label_past_decisions, migrations.RunPython.noop),
    ]

"""`manage.py load_workflows` and the immutability of published versions."""
from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from tests.unit.conftest import DEMO_DIR, demo_yaml
from workflows.models import AuditEvent, DomainError, Workflow, WorkflowVersion

pytestmark = pytest.mark.django_db


def _load(*paths, publish=True) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("load_workflows", *map(str, paths), *(["--publish"] if publish else []), stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_without_publish_a_changed_file_is_a_candidate_and_submitters_keep_the_current(reply_file):
    _load(reply_file)
    reply_file.write_text(reply_file.read_text().replace("auto_approve_at: 0.90", "auto_approve_at: 0.93"))
    out, _ = _load(reply_file, publish=False)
    assert "customer-reply v2 candidate" in out
    workflow = Workflow.objects.get(slug="customer-reply")
    assert workflow.current_version.number == 1
    assert workflow.versions.candidates().get().number == 2
    assert AuditEvent.objects.filter(action="workflow.candidate_created").count() == 2
    # Loading it again finds the same candidate; publishing it then makes it current.
    assert "v2 candidate (unchanged)" in _load(reply_file, publish=False)[0]
    assert "v2 published" in _load(reply_file)[0]
    assert Workflow.objects.get(slug="customer-reply").current_version.number == 2


@pytest.fixture
def reply_file(tmp_path):
    path = tmp_path / "customer-reply.yaml"
    path.write_text(demo_yaml("customer-reply"), encoding="utf-8")
    return path


def test_first_load_publishes_v1(reply_file):
    out, err = _load(reply_file)
    assert "customer-reply v1 published" in out
    assert err == ""
    version = WorkflowVersion.objects.get(workflow__slug="customer-reply")
    assert version.number == 1
    assert version.source_yaml == reply_file.read_text()
    assert version.spec.slug == "customer-reply"
    assert set(version.workflow.reviewer_groups.values_list("name", flat=True)) == {"support-reviewers"}
    event = AuditEvent.objects.get(action="workflow.published")
    assert event.workflow_version == version and event.payload["number"] == 1


def test_reloading_an_unchanged_file_publishes_nothing(reply_file):
    _load(reply_file)
    out, _ = _load(reply_file)
    assert "customer-reply v1 unchanged" in out
    assert WorkflowVersion.objects.filter(workflow__slug="customer-reply").count() == 1
    assert AuditEvent.objects.filter(action="workflow.published").count() == 1


def test_reformatted_but_equal_definition_is_unchanged(reply_file):
    # The hash is over the parsed definition, not the text: comments and layout do not count.
    _load(reply_file)
    text = reply_file.read_text().replace("slug: customer-reply", "slug:   'customer-reply'   # the id")
    text = text.replace("pii: redact\n", "pii: redact\n\n\n")
    reply_file.write_text("# reformatted\n" + text + "# end\n", encoding="utf-8")
    out, _ = _load(reply_file)
    assert "v1 unchanged" in out
    assert WorkflowVersion.objects.count() == 1


def test_changed_file_publishes_v2_and_keeps_v1(reply_file):
    _load(reply_file)
    v1 = WorkflowVersion.objects.get()
    reply_file.write_text(reply_file.read_text().replace("auto_approve_at: 0.90", "auto_approve_at: 0.93"))
    out, _ = _load(reply_file)
    assert "customer-reply v2 published" in out
    v2 = Workflow.objects.get(slug="customer-reply").current_version
    assert v2.number == 2 and v2.pk != v1.pk
    assert v2.spec.routing.auto_approve_at == 0.93
    v1.refresh_from_db()
    assert v1.spec.routing.auto_approve_at == 0.90, "the earlier version is untouched"
    assert AuditEvent.objects.filter(action="workflow.published").count() == 2


def test_folder_loads_every_demo_workflow():
    out, _ = _load(DEMO_DIR)
    for slug in ("customer-reply", "compliance-report", "underwriting-memo"):
        assert f"{slug} v1 published" in out
    assert WorkflowVersion.objects.count() == 3


def test_bad_file_exits_with_an_error_naming_the_key(tmp_path, reply_file):
    bad = tmp_path / "bad.yaml"
    bad.write_text(demo_yaml("customer-reply").replace("type: decimal", "type: money"), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="1 definition"):
        call_command("load_workflows", str(bad), str(reply_file), "--publish", stdout=out, stderr=err)
    assert f"{bad}: form.steps[1].fields[1].type:" in err.getvalue()
    # The good file beside it is still published; the bad one published nothing.
    assert "customer-reply v1 published" in out.getvalue()
    assert WorkflowVersion.objects.count() == 1


def test_bad_file_leaves_the_published_version_alone(reply_file):
    _load(reply_file)
    reply_file.write_text(reply_file.read_text().replace("block_below: 0.60", "block_below: 0.95"))
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("load_workflows", str(reply_file), stdout=io.StringIO(), stderr=err)
    assert "routing.block_below" in err.getvalue()
    assert WorkflowVersion.objects.get().number == 1


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(CommandError, match="no such file or folder"):
        _load(tmp_path / "nope.yaml")


def test_invalid_yaml_file_names_the_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("slug: x\nform: [\n", encoding="utf-8")
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("load_workflows", str(bad), stdout=io.StringIO(), stderr=err)
    assert f"{bad}: line " in err.getvalue()


def test_load_workflows_subprocess_exit_code(tmp_path):
    # The real command line: a refused file exits non-zero with the key on stderr. It fails
    # before touching the database, so it needs none.
    import os
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text(demo_yaml("customer-reply").replace("choices: [email, chat]", "choices: []"), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "manage.py", "load_workflows", str(bad)],
        cwd=DEMO_DIR.parents[1], env={**os.environ, "DJANGO_DEBUG": "true"}, capture_output=True, text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "form.steps[0].fields[2]: a choice field needs a non-empty 'choices' list" in proc.stderr


def test_saving_an_existing_version_raises(reply_file):
    _load(reply_file)
    version = WorkflowVersion.objects.get()
    version.definition = {**version.definition, "name": "Tampered"}
    with pytest.raises(DomainError, match="immutable"):
        version.save()
    version.refresh_from_db()
    assert version.definition["name"] == "Customer reply"


def test_deleting_a_version_raises(reply_file):
    _load(reply_file)
    version = WorkflowVersion.objects.get()
    with pytest.raises(DomainError, match="cannot be deleted"):
        version.delete()
    assert WorkflowVersion.objects.filter(pk=version.pk).exists()


def test_non_utf8_file_is_refused_with_a_message(tmp_path, reply_file):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(demo_yaml("customer-reply").replace("Customer reply", "Réponse client").encode("latin-1"))
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="1 definition"):
        call_command("load_workflows", str(bad), str(reply_file), "--publish", stdout=out, stderr=err)
    assert f"{bad}: not UTF-8 text" in err.getvalue()
    assert "customer-reply v1 published" in out.getvalue()


def test_seed_demo_is_idempotent(db):
    from django.contrib.auth import get_user_model

    from workflows.models import AuditEvent, WorkflowVersion

    for _ in range(2):
        call_command("seed_demo", stdout=io.StringIO())
    users = get_user_model().objects.filter(username__in=["submitter", "reviewer", "compliance", "wfadmin"])
    assert users.count() == 4
    assert all(u.check_password("reviewdesk-demo") for u in users)
    assert WorkflowVersion.objects.count() == 3
    assert AuditEvent.objects.filter(action="workflow.published").count() == 3
    reviewer = users.get(username="reviewer")
    assert set(reviewer.groups.values_list("name", flat=True)) == {
        "reviewer", "support-reviewers", "compliance-reviewers", "underwriting-reviewers"}

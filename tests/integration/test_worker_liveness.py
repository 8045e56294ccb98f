"""The worker's compose healthcheck: its command answers for a live worker and fails for a deaf one.

The command is taken from docker-compose.yml as written, with only the node name put in for
this run's worker (compose names the node celery@<container hostname>).
"""
import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT, WORKER_NAME


def _healthcheck_argv(node: str) -> list[str]:
    services = yaml.safe_load(Path(ROOT, "docker-compose.yml").read_text())["services"]
    kind, command = services["worker"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    command = command.split(">")[0]  # the output redirect belongs to the shell
    argv = shlex.split(command.replace("celery@$$HOSTNAME", node))
    assert argv[:3] == ["celery", "-A", "reviewdesk"]
    return [sys.executable, "-m", *argv]


def _run(argv):
    return subprocess.run(argv, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=60)


def test_the_worker_healthcheck_passes_for_a_live_worker_and_fails_for_a_missing_one(celery_worker_process):
    live = _run(_healthcheck_argv(WORKER_NAME))
    assert live.returncode == 0, live.stdout + live.stderr
    assert "pong" in live.stdout
    deaf = _run([*_healthcheck_argv("nobody-" + WORKER_NAME)[:-2], "--timeout", "2"])
    assert deaf.returncode != 0


def test_the_flush_guard_sees_queued_and_running_work_until_it_is_done(worker, demo):
    """conftest's _worker_quiet_before_flush waits on _worker_busy() before a transactional
    test's TRUNCATE; it is only worth having if it sees work the worker has not finished."""
    from tests.conftest import CUSTOMER_REPLY_INPUT, _worker_busy, wait_for
    from workflows import services
    from workflows.models import Submission, SubmissionState

    submission = services.submission_create(version=demo.version("customer-reply"), user=demo.users["submitter"],
                                            data={**CUSTOMER_REPLY_INPUT, "complaint": "Broken. [[slow:2]]"})
    assert wait_for(_worker_busy, timeout=5, message="the worker to hold the draft") >= 1
    assert Submission.objects.get(pk=submission.pk).state in (SubmissionState.SUBMITTED, SubmissionState.GENERATING)
    wait_for(lambda: _worker_busy() == 0, timeout=30, message="the worker to finish")
    assert Submission.objects.get(pk=submission.pk).state not in (SubmissionState.SUBMITTED, SubmissionState.GENERATING)

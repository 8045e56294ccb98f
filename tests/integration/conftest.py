"""Helpers shared by the integration tests: submitting, waiting for the worker, and drafts
recorded in-process from a hand-made completion (for the review services, which do not
need a worker)."""
from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import CUSTOMER_REPLY_INPUT, wait_for
from tests.scripted import scripted_result
from workflows import services
from workflows.definitions import parse_definition
from workflows.models import Submission, SubmissionState

DEMO_WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows" / "demo_workflows"
# Token probabilities the fake model uses per lane (tests/fake_openai.py); the same numbers
# give the same lanes when a completion is made by hand.
CERTAINTY = {"auto": 0.99, "async": 0.80, "blocking": 0.30}
GOOD_OUTPUT = json.dumps({"reply": "Dear Ann, we are sorry your parcel arrived broken.", "tone": "apologetic"},
                         indent=2)


def unique_marker() -> str:
    """A string no other test writes, to find this test's requests on the fake model."""
    return f"case-{uuid.uuid4().hex[:12]}"


def submit(demo, data, *, user=None, slug="customer-reply"):
    return services.submission_create(version=demo.version(slug), user=user or demo.users["submitter"], data=data)


def routed(pk: int) -> Submission | None:
    """The submission once generation is over (routed, approved, failed...), else None."""
    submission = Submission.objects.get(pk=pk)
    busy = (SubmissionState.SUBMITTED, SubmissionState.GENERATING, SubmissionState.REGENERATING)
    return submission if submission.state not in busy else None


def wait_routed(pk: int, *, attempt: int = 1) -> Submission:
    def done():
        submission = routed(pk)
        return submission if submission is not None and submission.attempts >= attempt else None

    return wait_for(done, message=f"the worker to finish attempt {attempt} of submission #{pk}")


def wait_task_finished(worker, task_id: str) -> None:
    """Wait until the worker logs that this task ran to its end (results are not stored)."""
    pattern = re.compile(rf"Task workflows\.tasks\.generate_draft\[{re.escape(task_id)}\] (succeeded|failed|raised)")
    wait_for(lambda: pattern.search(Path(worker.log_path).read_text()), message=f"task {task_id} to finish")


def completion(lane: str = "blocking", content: str = GOOD_OUTPUT, model: str = "gpt-4o-mini", *, demo=None,
               slug: str = "customer-reply", data=None):
    """A pipeline result whose token probabilities put a good draft in ``lane``."""
    spec = parse_definition(yaml.safe_load((DEMO_WORKFLOWS / f"{slug}.yaml").read_text()))
    return scripted_result(spec, dict(data or CUSTOMER_REPLY_INPUT), probability=CERTAINTY[lane], content=content,
                           model=model)


def drafted(submission: Submission, *, lane: str = "blocking", content: str = GOOD_OUTPUT):
    """Claim a submission for generation and record a draft for it, as the task would."""
    claimed = services.generation_claim(submission_id=submission.pk)
    assert claimed is not None, "the submission should have been claimable"
    result = scripted_result(submission.workflow_version.spec, submission.data, probability=CERTAINTY[lane],
                             content=content)
    draft = services.draft_record(submission_id=submission.pk, attempt=claimed.attempts, result=result)
    assert draft is not None
    return draft


@pytest.fixture
def publish_variant(demo):
    """Publish a copy of a demo workflow under a new slug with some keys changed."""

    def publish(slug: str, new_slug: str, **changes):
        definition = yaml.safe_load((DEMO_WORKFLOWS / f"{slug}.yaml").read_text())
        definition["slug"] = new_slug
        for dotted, value in changes.items():
            target = definition
            *path, last = dotted.split("__")
            for key in path:
                target = target[key]
            target[last] = value
        version, created = services.workflow_publish(spec=parse_definition(definition))
        assert created
        return version

    return publish


# The fault rigs' fixtures (tests/fault_rig.py), for the modules that run rigs.
@pytest.fixture
def model():
    """A fake OpenAI-compatible server the rigs' workers talk to."""
    from tests.fake_openai import serving

    with serving() as fake:
        yield fake


@pytest.fixture
def rigs(tmp_path):
    """Make rigs by name; every one is closed when the test ends."""
    from tests.fault_rig import Rig

    made = []

    def make(name, **kwargs):
        rig = Rig(name, tmp_path, **kwargs)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()

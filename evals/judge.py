"""Whether a judge model may gate: its agreement with reviewers, shown before it counts.

A case's rubric is graded by a judge model. Until the judge has been measured against
reviewers on at least MIN_CASES reviewed cases of the dataset and agreed on at least
MIN_AGREEMENT of them, its grades are shown beside each result but do not count in the pass
rate (nor, therefore, in the publish gate). The measurement grades each reviewed case's
reference output, the very draft the reviewer judged, so both verdicts are about one text.
"""
from __future__ import annotations

from workflows.labels import MATERIAL
from workflows.pipeline.engines import default_engine
from workflows.pipeline.run import judge

from .expectations import JUDGE_PASS, CaseError, parse_expectations
from .models import Dataset, JudgeAgreement
from .runner import intake

MIN_CASES = 20
MIN_AGREEMENT = 0.8


def reviewed_cases(dataset: Dataset):
    """Cases with a reviewer's verdict, the draft it was about, and a rubric to grade it by."""
    out = []
    for case in dataset.cases.exclude(reference_output="").exclude(reviewer_label="").order_by("key"):
        try:
            rubric = parse_expectations(case.expect).rubric
        except CaseError:
            continue
        if rubric:
            out.append((case, rubric))
    return out


def measure(dataset: Dataset, *, actor=None, engine=None) -> JudgeAgreement:
    version = dataset.workflow.current_version
    spec = version.spec
    model = spec.qa.model if spec.qa else spec.model.name
    details, agreed = [], 0
    for case, rubric in reviewed_cases(dataset):
        try:
            values = intake(spec, case.input)
        except CaseError:
            continue
        verdict = judge(spec, values, case.reference_output, rubric, engine=engine or default_engine(), model=model)
        reviewer_ok = case.reviewer_label not in MATERIAL
        judge_ok = verdict.grade is not None and verdict.grade >= JUDGE_PASS
        agreed += reviewer_ok == judge_ok
        details.append({"case": case.key, "reviewer": "acceptable" if reviewer_ok else "not acceptable",
                        "judge": "acceptable" if judge_ok else "not acceptable", "grade": verdict.grade})
    return JudgeAgreement.objects.create(dataset=dataset, model=model, cases=len(details), agreed=agreed,
                                         details=details, measured_by=actor if actor is not None and actor.is_authenticated else None)


def latest(dataset: Dataset) -> JudgeAgreement | None:
    return dataset.judge_agreements.order_by("-measured_at").first()


def shows_trust(agreement: JudgeAgreement | None) -> bool:
    return bool(agreement and agreement.cases >= MIN_CASES and agreement.rate >= MIN_AGREEMENT)


def trusted(dataset: Dataset) -> bool:
    return shows_trust(latest(dataset))

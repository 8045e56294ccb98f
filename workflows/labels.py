"""What a reviewer's decision says about its draft: the label calibration learns from (issue 6).

Every decision labels its draft: unchanged, minor edit, major edit or rejected. The size of an
edit is a normalised distance between the draft's values and the approved values, in [0, 1]:
0 when nothing that matters changed, 1 when nothing was kept. Cut-off (stated, and the same for
every workflow so that labels compare across workflows): a distance up to MINOR_EDIT_MAX is a
minor edit (a typo, a name, a figure in a long text); above it, a major edit. A major edit or a
rejection is a "material change": the draft would have been wrong to send as it was.

Pure: no database, no Django settings.
"""
from __future__ import annotations

import difflib
import json
import re
from enum import StrEnum
from typing import Any

# Up to a tenth of the characters changed is a minor edit. Chosen so that fixing a name, a date
# or a sentence in a typical 300-1,000 character reply is minor, and rewriting a paragraph or
# changing a short decision field ("approve" -> "decline") is major.
MINOR_EDIT_MAX = 0.10


class Label(StrEnum):
    UNCHANGED = "unchanged"
    MINOR_EDIT = "minor_edit"
    MAJOR_EDIT = "major_edit"
    REJECTED = "rejected"


MATERIAL = frozenset({Label.MAJOR_EDIT, Label.REJECTED})

_SPACE = re.compile(r"\s+")


def _values(text: str, json_output: bool) -> dict[str, str]:
    """The output as {path: text}: each JSON leaf on its own, so moving keys changes nothing and
    a change is measured against the value it happened in; plain text is one value."""
    if json_output:
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, (dict, list)):
            out: dict[str, str] = {}
            _flatten(parsed, "", out)
            return out
    return {"": _SPACE.sub(" ", text).strip()}


def _flatten(value: Any, path: str, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{path}.{key}", out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _flatten(item, f"{path}[{i}]", out)
    else:
        text = value if isinstance(value, str) else json.dumps(value)
        out[path] = _SPACE.sub(" ", text).strip()


def edit_distance(original: str, final: str, *, json_output: bool) -> float:
    """1 - 2M / (|a| + |b|) summed over every value (difflib's ratio, over the whole output):
    M is the number of characters the two versions share in order, per value. A value that
    appears or disappears counts with all its characters."""
    a, b = _values(original, json_output), _values(final, json_output)
    matched = total = 0
    for path in a.keys() | b.keys():
        x, y = a.get(path, ""), b.get(path, "")
        total += len(x) + len(y)
        if x == y:
            matched += len(x)
        elif x and y:
            matched += sum(block.size for block in difflib.SequenceMatcher(None, x, y, autojunk=False).get_matching_blocks())
    if total == 0:
        return 0.0
    return round(1 - 2 * matched / total, 6)


def label_for(decision: str, distance: float | None) -> Label:
    """The label of a decision ('approve', 'edit', 'reject', 'regenerate'). Sending a draft back
    for regeneration is a rejection of that draft: it was not used."""
    if decision in ("reject", "regenerate"):
        return Label.REJECTED
    if decision == "approve" or not distance:
        return Label.UNCHANGED
    return Label.MINOR_EDIT if distance <= MINOR_EDIT_MAX else Label.MAJOR_EDIT

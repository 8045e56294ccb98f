"""Cases as JSON Lines: one object per line, {"id", "input", "expect", "note"?, "provenance"?}.
Reading refuses the whole file at the first bad lines (all of them named), so an import never
leaves half a dataset."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from .expectations import CaseError, parse_expectations

MAX_LINE_CHARS = 200_000
KNOWN_KEYS = {"id", "input", "expect", "note", "provenance"}


@dataclass(frozen=True)
class CaseLine:
    key: str
    input: dict[str, Any]
    expect: dict[str, Any]
    note: str = ""


def read_cases(text: str, *, limit: int = 10_000) -> list[CaseLine]:
    cases: list[CaseLine] = []
    errors: list[tuple[str, str]] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        if len(line) > MAX_LINE_CHARS:
            errors.append((where, f"longer than {MAX_LINE_CHARS} characters"))
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            errors.append((where, f"not JSON ({exc.msg} at column {exc.colno})"))
            continue
        if not isinstance(obj, dict):
            errors.append((where, "must be a JSON object"))
            continue
        unknown = sorted(set(obj) - KNOWN_KEYS)
        if unknown:
            errors.append((where, f"unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(KNOWN_KEYS))}"))
        key = obj.get("id")
        if not isinstance(key, str) or not key.strip() or len(key) > 120:
            errors.append((f"{where}.id", "a name of 1-120 characters is required"))
            continue
        if key in seen:
            errors.append((f"{where}.id", f"{key!r} appears twice"))
        seen.add(key)
        if not isinstance(obj.get("input"), dict):
            errors.append((f"{where}.input", "must be an object of form values"))
        try:
            parse_expectations(obj.get("expect"))
        except CaseError as exc:
            errors.extend((f"{where}.expect.{k}".rstrip("."), r) for k, r in exc.errors)
        note = obj.get("note", "")
        if not isinstance(note, str):
            errors.append((f"{where}.note", "must be text"))
        if not errors:
            cases.append(CaseLine(key=key.strip(), input=obj["input"], expect=obj.get("expect") or {}, note=note))
        if len(seen) > limit:
            errors.append((where, f"more than {limit} cases in one file"))
            break
    if errors:
        raise CaseError(errors[:50])
    if not cases:
        raise CaseError([("", "the file holds no cases")])
    return cases


def write_cases(cases: Iterable[Any]) -> Iterator[str]:
    """One line per case (model instances or CaseLine), with its provenance when it has one."""
    for case in cases:
        row = {"id": case.key, "input": case.input, "expect": case.expect}
        if getattr(case, "note", ""):
            row["note"] = case.note
        provenance = getattr(case, "provenance_record", None)
        if provenance:
            row["provenance"] = provenance
        yield json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n"

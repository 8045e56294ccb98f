"""Validators: what is wrong with a draft, as findings (DESIGN.md section 4)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from ..definitions import WorkflowDefinition
from ..vocab import Finding


@dataclass
class Validation:
    parsed: Any = None
    findings: list[Finding] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)

    def add(self, code: Finding, detail: str) -> None:
        if code not in self.findings:
            self.findings.append(code)
            self.details[code] = detail
        else:
            self.details[code] += f"; {detail}"


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_all_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    return True


def validate_output(spec: WorkflowDefinition, content: str) -> Validation:
    result = Validation()
    if not content.strip():
        result.add(Finding.EMPTY_OUTPUT, "the model returned no text")
        return result
    if spec.output.max_chars and len(content) > spec.output.max_chars:
        result.add(Finding.LENGTH_EXCEEDED, f"{len(content)} characters > {spec.output.max_chars}")
    if spec.output.format == "json":
        try:
            result.parsed = json.loads(content, parse_constant=_refuse_constant)
        except json.JSONDecodeError as exc:
            result.add(Finding.SCHEMA_INVALID, f"not JSON: {exc.msg} at position {exc.pos}")
            return result
        except RecursionError:
            # Nesting deeper than the parser's stack (e.g. "[" * 100000).
            result.add(Finding.SCHEMA_INVALID, "not JSON: nested too deeply")
            return result
        except ValueError as exc:  # NaN / Infinity, refused by _refuse_constant
            result.add(Finding.SCHEMA_INVALID, f"not JSON: {exc}")
            return result
        if not _all_finite(result.parsed):
            # 1e400 parses to inf, which no JSON column (nor any reader) accepts.
            result.parsed = None
            result.add(Finding.SCHEMA_INVALID, "a number is too large to represent")
            return result
        validator = jsonschema.Draft202012Validator(spec.output.json_schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(result.parsed))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            result.add(Finding.SCHEMA_INVALID, f"{where}: {error.message}")
    return result

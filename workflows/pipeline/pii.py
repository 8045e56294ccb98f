"""Reversible redaction of the form fields a workflow marks `pii: true`.

Structured input is our advantage over free text: we know which values are a name or an
account number without guessing, so those values never leave the building. Each is replaced
by a placeholder named after its field (``<CUSTOMER_NAME>``) before the prompt is rendered, and
put back into the model's answer afterwards, so reviewers and the released output see the real
values while the provider never does. Detector-based redaction of free text (Presidio) builds on
this with the same placeholders.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..definitions import WorkflowDefinition
from ..jsonvalues import map_strings
from .prompts import as_text


@dataclass(frozen=True)
class Redaction:
    values: dict[str, Any]  # what the prompt is rendered from
    placeholders: dict[str, str]  # placeholder -> original text

    @property
    def fields(self) -> list[str]:
        return sorted(p.strip("<>").lower() for p in self.placeholders)

    def mask(self, text: str) -> str:
        """Replace every known pii value inside free text (a complaint that repeats the
        customer's name, a reviewer's feedback) by its placeholder: as a whole word, in any
        case ("ann" too, but not "Annual"), longest values first so a full name is masked
        before a part of it."""
        for token, original in sorted(self.placeholders.items(), key=lambda item: -len(item[1])):
            if len(original) >= _MIN_MASKED_LENGTH:
                pattern = r"(?<!\w)" + re.escape(original) + r"(?!\w)"
                text = re.sub(pattern, token, text, flags=re.IGNORECASE)
        return text

    def unresolved(self, text: str) -> list[str]:
        """Placeholders still in the answer after restoring: the model altered one (changed
        its case, used it as a key). Such an answer must not go out unreviewed."""
        names = [token.strip("<>") for token in self.placeholders]
        # A placeholder's shape in any case or bracket ("<Customer_Name>", "[CUSTOMER_NAME]"),
        # not the bare name, which an output key may legitimately share.
        found = {n for n in names if re.search(r"[<\[{]\s*" + re.escape(n) + r"\s*[>\]}]", text, re.IGNORECASE)}
        return sorted(found)


# Shorter values ("Al", "x") would mask ordinary words; the field itself is still replaced.
_MIN_MASKED_LENGTH = 3


def placeholder_for(field_name: str) -> str:
    return f"<{field_name.upper()}>"


def redact(spec: WorkflowDefinition, values: dict[str, Any]) -> Redaction:
    redacted = dict(values)
    placeholders: dict[str, str] = {}
    for field in spec.form.all_fields():
        value = values.get(field.name)
        if field.pii and value not in (None, "", []):
            token = placeholder_for(field.name)
            redacted[field.name] = token
            placeholders[token] = as_text(value)
    redaction = Redaction(values=redacted, placeholders=placeholders)
    for name, value in values.items():
        if redacted[name] is value and placeholders:  # not itself a pii field
            redacted[name] = map_strings(value, redaction.mask)
    return redaction


def _restore_text(text: str, placeholders: dict[str, str]) -> str:
    for token, original in placeholders.items():
        text = text.replace(token, original)
    return text


def restore(content: str, redaction: Redaction, *, is_json: bool) -> str:
    """Put the original values back into the model's answer.

    JSON answers are restored inside their parsed strings, so a value with a quote or a
    backslash cannot break the document; an answer that is not JSON is restored as text (the
    validators will flag it anyway).
    """
    if not redaction.placeholders:
        return content
    if is_json:
        try:
            document = json.loads(content)
        except (ValueError, RecursionError):
            return _restore_text(content, redaction.placeholders)
        restored = map_strings(document, lambda text: _restore_text(text, redaction.placeholders))
        return json.dumps(restored, ensure_ascii=False)
    return _restore_text(content, redaction.placeholders)

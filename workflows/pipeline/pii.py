"""Reversible redaction of personal data before a prompt reaches a model.

Two sources of personal data, one mechanism:

* **Fields marked `pii: true`.** Structured input is our advantage over free text: we know which
  values are a name or an account number without guessing, so those values never leave the
  building. Each is replaced by a placeholder named after its field (``<CUSTOMER_NAME>``), and
  masked wherever it recurs in free text (whole word, any case). This happens in both modes:
  DESIGN.md section 3 says such a value "is always replaced ... whatever a detector finds".
* **Detected in free text** (`pii_detect.detect`: e-mail, phone, card, IBAN, national ids, IP
  addresses, names in a few announcing positions). Every other string the prompt is rendered
  from, and reviewer feedback passed to `Redaction.mask`, is scanned; each value found becomes
  ``<EMAIL_ADDRESS_1>``, ``<PHONE_NUMBER_2>`` ... numbered per kind in order of appearance
  (fields in form order), the same value always getting the same placeholder. So the same input
  always gives the same redacted text, and a cache keyed on the prompt keeps working.

`restore` puts the real values back into the model's answer (inside parsed JSON strings, so no
value can break the document); reviewers and the released output see the real values, the
provider and the call logs (which record `Redaction.values` and the rendered prompt) only the
placeholders.

`pii: allow` on a workflow switches the detector off, for the input and for `pii_in_output`;
`Redaction.mode` says which mode ran so the audit event can record it. The `pii: true` fields
are still replaced.

`pii_in_output` looks for personal data in the restored answer that the submitter (or the
reviewer's feedback) did not supply: an e-mail, phone or card number the model invented or
leaked. It reports entity kinds only, never the values. Names are not checked there: a reply
signed "Sarah, Customer Care" is the model writing as the company, and a cue-phrase recogniser is
too weak to hold a draft on.

If detection fails (an exception in the analyzer) the exception propagates: the draft fails
rather than send unredacted text.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..definitions import WorkflowDefinition
from ..jsonvalues import map_strings
from .pii_detect import Detected, detect
from .prompts import as_text

__all__ = ["Detected", "Redaction", "detect", "pii_in_output", "pii_restored", "placeholder_for", "redact", "restore"]

REDACT = "redact"
ALLOW = "allow"

# Entity kinds pii_in_output ignores; see the module docstring.
NOT_CHECKED_IN_OUTPUT = frozenset({"PERSON"})

# Anything shaped like a placeholder, ours or typed by someone: never scanned, never re-masked.
_PLACEHOLDER_SHAPE = re.compile(r"<[A-Z][A-Z0-9_]*>")
# Redacting a value changes what surrounds the next one (a context word moves closer, a
# neighbouring digit run stops looking like part of a longer number): look again until nothing
# changes, a few times at most.
_MAX_PASSES = 4


@dataclass(frozen=True)
class Redaction:
    values: dict[str, Any]  # what the prompt is rendered from
    # placeholder -> original text; kept out of repr so that logging a Redaction logs no value
    placeholders: dict[str, str] = field(repr=False)
    mode: str = REDACT
    # Detector placeholders -> entity kind ("<EMAIL_ADDRESS_1>" -> "EMAIL_ADDRESS"); the other
    # placeholders are fields. Grows when mask() finds something new in reviewer feedback.
    entities: dict[str, str] = field(default_factory=dict)
    # Every text the submitter or reviewer supplied, so pii_in_output can tell what is new.
    # Kept in memory for the run only; never logged (repr=False).
    supplied: list[str] = field(default_factory=list, repr=False)

    @property
    def detecting(self) -> bool:
        return self.mode != ALLOW

    @property
    def field_names(self) -> list[str]:
        return sorted(p.strip("<>").lower() for p in self.placeholders if p not in self.entities)

    @property
    def kinds(self) -> list[str]:
        """The entity kinds the detector redacted ("EMAIL_ADDRESS", ...), without values."""
        return sorted(set(self.entities.values()))

    @property
    def fields(self) -> list[str]:
        """What was redacted, for audit events: the `pii: true` field names, then the detected
        entity kinds (upper case, so the two cannot be confused). No values."""
        return self.field_names + self.kinds

    def mask(self, text: str, *, supplied: bool = True) -> str:
        """Redact free text (a complaint, a reviewer's feedback): the `pii: true` values wherever
        they recur, then, unless detection is off, whatever the detector finds.

        Values found here for the first time get new placeholders, recorded on this redaction so
        that `restore` puts them back into the answer.

        ``supplied=False`` for text that did not come from a person (a validation error that
        quotes the model's own answer): it is masked, but what it contains does not count as
        supplied, or personal data the model invented would pass `pii_in_output` after a repair.
        """
        if supplied:
            self.supplied.append(text)
        return self._redact_text(text)

    def unresolved(self, text: str) -> list[str]:
        """Placeholders still in the answer after restoring: the model altered one (changed
        its case, used it as a key). Such an answer must not go out unreviewed."""
        names = [token.strip("<>") for token in self.placeholders]
        # A placeholder's shape in any case or bracket ("<Customer_Name>", "[CUSTOMER_NAME]"),
        # not the bare name, which an output key may legitimately share.
        found = {n for n in names if re.search(r"[<\[{]\s*" + re.escape(n) + r"\s*[>\]}]", text, re.IGNORECASE)}
        return sorted(found)

    def was_supplied(self, value: str) -> bool:
        """Whether ``value`` occurs in what the submitter or reviewer wrote (any case; for
        numbers also with other spacing or punctuation: "+44 20 7946 0958" == "442079460958")."""
        folded = value.casefold()
        if any(folded in text.casefold() for text in self.supplied):
            return True
        compact = _compact(value)
        if len(compact) < 6:
            return False
        # The last nine characters of a number: "+1 212 555 0134" was supplied as "(212) 555-0134".
        tail = compact[-9:] if compact[-9:].isdigit() else compact
        return any(tail in _compact(text) for text in self.supplied)

    # --- internals ----------------------------------------------------------------------------

    def _redact_text(self, text: str) -> str:
        text = self._mask_field_values(text)
        return self._mask_detected(text) if self.detecting else text

    def _mask_field_values(self, text: str) -> str:
        """As a whole word, in any case ("ann" too, but not "Annual"), longest values first so a
        full name is masked before a part of it."""
        fields = [(t, o) for t, o in self.placeholders.items() if t not in self.entities]
        for token, original in sorted(fields, key=lambda item: -len(item[1])):
            if len(original) >= _MIN_MASKED_LENGTH:
                pattern = r"(?<!\w)" + re.escape(original) + r"(?!\w)"
                text = re.sub(pattern, token, text, flags=re.IGNORECASE)
        return text

    def _mask_detected(self, text: str) -> str:
        for _ in range(_MAX_PASSES):
            reserved = _placeholder_spans(text)
            found = [d for d in detect(text) if not _overlaps(d.start, d.end, reserved)]
            masked = self._mask_known_detected(
                _replace_spans(text, [(d.start, d.end, self._token_for(d, text)) for d in found]))
            if masked == text:
                break
            text = masked
        return text

    def _mask_known_detected(self, text: str) -> str:
        """A value the detector found elsewhere, recurring where it was not detected (a phone
        number without its context word): same placeholder, exact case."""
        known = {o: t for t, o in self.placeholders.items()
                 if t in self.entities and len(o) >= _MIN_MASKED_LENGTH}
        if not known:
            return text
        longest_first = sorted(known, key=len, reverse=True)
        pattern = re.compile("|".join(r"(?<!\w)" + re.escape(o) + r"(?!\w)" for o in longest_first))
        reserved = _placeholder_spans(text)
        spans = [(m.start(), m.end(), known[m.group()]) for m in pattern.finditer(text)
                 if not _overlaps(m.start(), m.end(), reserved)]
        return _replace_spans(text, spans)

    def _token_for(self, found: Detected, text: str) -> str:
        original = found.text(text)
        for token, value in self.placeholders.items():
            if value == original and token in self.entities:
                return token
        number = 1 + sum(1 for kind in self.entities.values() if kind == found.entity_type)
        while self._unavailable(token := f"<{found.entity_type}_{number}>"):
            number += 1
        self.placeholders[token] = original
        self.entities[token] = found.entity_type
        return token

    def _unavailable(self, token: str) -> bool:
        # Taken by a field, or already written in the input itself (restore would replace it).
        folded = token.casefold()
        return token in self.placeholders or any(folded in text.casefold() for text in self.supplied)


# Shorter values ("Al", "x") would mask ordinary words; the field itself is still replaced.
_MIN_MASKED_LENGTH = 3


def placeholder_for(field_name: str) -> str:
    return f"<{field_name.upper()}>"


# Field types whose values cannot carry free text: the author's own options, numbers, dates,
# yes/no. Running the detector over them costs CPU on every draft and finds nothing.
_NO_FREE_TEXT = frozenset({"choice", "multichoice", "integer", "decimal", "date", "boolean"})
# Every kind pii_in_output checks (all but PERSON) has a digit or an "@" in it; a string with
# neither is skipped without running the detector.
_MAY_HOLD_CHECKED_KINDS = re.compile(r"[\d@]")


def redact(spec: WorkflowDefinition, values: dict[str, Any]) -> Redaction:
    redacted = dict(values)
    placeholders: dict[str, str] = {}
    for form_field in spec.form.all_fields():
        value = values.get(form_field.name)
        if form_field.pii and value not in (None, "", []):
            token = placeholder_for(form_field.name)
            redacted[form_field.name] = token
            placeholders[token] = as_text(value)
    mode = ALLOW if spec.pii == ALLOW else REDACT
    redaction = Redaction(values=redacted, placeholders=placeholders, mode=mode,
                          supplied=[t for v in values.values() for t in _strings(v)])
    if not (placeholders or redaction.detecting):
        return redaction
    types = {f.name: f.type for f in spec.form.all_fields()}
    for name in _in_form_order(spec, values):
        value = values[name]
        if types.get(name) in _NO_FREE_TEXT:
            continue
        if redacted[name] is value:  # not itself a pii field
            redacted[name] = map_strings(value, redaction._redact_text)
    return redaction


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
        # Keep the model's own layout (indentation, key order) where we can: replace each
        # placeholder in the JSON text by its JSON-escaped value, and use that text only if it
        # parses to the same document as restoring inside the parsed strings does.
        escaped = {token: json.dumps(value, ensure_ascii=False)[1:-1] for token, value in redaction.placeholders.items()}
        in_place = _restore_text(content, escaped)
        try:
            if json.loads(in_place) == restored:
                return in_place
        except (ValueError, RecursionError):
            pass
        return json.dumps(restored, ensure_ascii=False)
    return _restore_text(content, redaction.placeholders)


def pii_in_output(content: str, redaction: Redaction) -> list[str]:
    """Entity kinds of personal data in the restored answer that nobody supplied, e.g.
    ``["CREDIT_CARD", "EMAIL_ADDRESS"]``; empty when detection is off. Values restored from the
    input are fine; the result never contains a value."""
    if not redaction.detecting:
        return []
    kinds = set()
    for text in _answer_strings(content):
        if not _MAY_HOLD_CHECKED_KINDS.search(text):
            continue
        for found in detect(text):
            if found.entity_type not in NOT_CHECKED_IN_OUTPUT and not redaction.was_supplied(found.text(text)):
                kinds.add(found.entity_type)
    return sorted(kinds)


def pii_restored(content: str, redaction: Redaction) -> list[str]:
    """Entity kinds of personal data the detector found in the request's free text that the
    restored answer carries, e.g. ``["US_BANK_NUMBER"]``; empty when detection is off.

    The model saw a placeholder; restoring put the real value into the draft, which is then
    released with it. A reviewer decides whether it belongs there (a regulator-ready report
    rarely needs a customer's account number). Values of `pii: true` fields are not counted:
    the workflow declared them, so their use is the workflow's design. Names are not counted,
    as in `pii_in_output`. Kinds only, never values."""
    if not redaction.detecting:
        return []
    wanted = {redaction.placeholders[token]: kind for token, kind in redaction.entities.items()
              if kind not in NOT_CHECKED_IN_OUTPUT}
    if not wanted:
        return []
    texts = list(_answer_strings(content))
    return sorted({kind for value, kind in wanted.items() if any(value in text for text in texts)})


# --- helpers ---------------------------------------------------------------------------------


def _restore_text(text: str, placeholders: dict[str, str]) -> str:
    # One pass, so a restored value that happens to contain a placeholder is not expanded again.
    pattern = re.compile("|".join(re.escape(token) for token in placeholders))
    return pattern.sub(lambda m: placeholders[m.group()], text)


def _in_form_order(spec: WorkflowDefinition, values: dict[str, Any]) -> list[str]:
    """Form order, then any other keys sorted: placeholder numbers must not depend on the order
    a dict happened to arrive in (jsonb does not keep it)."""
    declared = [f.name for f in spec.form.all_fields() if f.name in values]
    return declared + sorted(set(values) - set(declared))


def _strings(value: Any) -> list[str]:
    found: list[str] = []
    map_strings(value, lambda text: found.append(text) or text)
    if not found and value not in (None, "", []):
        found.append(as_text(value))
    return found


def _answer_strings(content: str) -> Iterable[str]:
    """The strings of a JSON answer (so escapes like \\n do not glue words to numbers), or the
    answer itself."""
    try:
        document = json.loads(content)
    except (ValueError, RecursionError):
        return [content]
    return _strings(document) if isinstance(document, (dict, list)) else [content]


def _compact(text: str) -> str:
    return re.sub(r"[\W_]+", "", text).casefold()


def _placeholder_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _PLACEHOLDER_SHAPE.finditer(text)]


def _overlaps(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    return any(start < s_end and s_start < end for s_start, s_end in spans)


def _replace_spans(text: str, spans: list[tuple[int, int, str]]) -> str:
    """Replace non-overlapping (start, end, replacement) spans, right to left."""
    for start, end, replacement in sorted(spans, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text

import json

from django import template

register = template.Library()


@register.filter
def get_item(mapping, key):
    return mapping.get(key) if isinstance(mapping, dict) else None


@register.filter
def join_list(value):
    return ", ".join(str(v) for v in value) if isinstance(value, list) else value


@register.filter
def pretty_json(text):
    """Indent a JSON draft for reading; non-JSON text is returned unchanged."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return text


@register.filter
def diff_lines(diff: str):
    """Split a unified diff into (kind, line) for colouring: add, del, hunk or context."""
    kinds = []
    for line in diff.splitlines():
        if line.startswith(("+++", "---")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "context"
        kinds.append((kind, line))
    return kinds


@register.filter
def lane_label(value):
    """A lane code as people say it ("blocking_review" -> "Blocking review")."""
    from ..models import Lane

    return Lane(value).label if value in Lane.values else value


@register.filter
def output_fields(text):
    """The top-level fields of a JSON object output as (label, value) pairs, for reading;
    None when the output is not a JSON object (the template then shows it as text)."""
    try:
        document = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    return [(_label(key), value) for key, value in document.items()]


def _label(key) -> str:
    return str(key).replace("_", " ").capitalize()


@register.filter
def is_list(value):
    return isinstance(value, list)


# --- model certainty (pipeline/confidence.py) -------------------------------------------------

_CERTAINTY_SOURCES = {
    "logprobs": "token probabilities",
    "agreement": "agreement between two samples",
    "qa": "QA grade",
    "offline_heuristic": "offline engine's heuristic",
    "none": "no signal: set to the middle",
}


@register.filter
def certainty_source_label(source):
    """Where a draft's certainty came from, in words."""
    return _CERTAINTY_SOURCES.get(source, source or "")


@register.filter
def certainty_rows(components):
    """The per-field certainties of a draft, worst first: [{field, label, certainty, low}]."""
    fields = components.get("fields") if isinstance(components, dict) else None
    if not isinstance(fields, dict):
        return []
    low = set(components.get("low_fields") or ())
    rows = [
        {"field": key, "label": _label(key), "certainty": value, "low": key in low}
        for key, value in fields.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    rows.sort(key=lambda row: (row["certainty"], str(row["field"])))
    return rows


def _in_written_order(content: str, parsed: dict) -> dict:
    try:
        written = json.loads(content)
    except (ValueError, RecursionError):
        return parsed
    return written if written == parsed else parsed


@register.filter
def draft_certainty(draft):
    """A draft laid out for reading with what the model was less sure of marked.

    {"kind": "fields", "fields": [{label, certainty, low, value}]} for a JSON object,
    {"kind": "text", "segments": [...]} for text, {"kind": "json", "text": ...} for other JSON.
    A value is {"type": "text", "segments"}, {"type": "list", "items": [{low, certainty, value}]}
    or {"type": "json", "text"}; a segment is {"text", "low", "p"}.
    """
    from ..pipeline.confidence import LOW_CERTAINTY, field_path

    components = getattr(draft, "score_components", None)
    components = components if isinstance(components, dict) else {}
    parsed = getattr(draft, "parsed", None)
    content = getattr(draft, "content", "") or ""
    if parsed is None:
        return {"kind": "text", "segments": _segments(content, components.get("spans"))}
    if not isinstance(parsed, dict):
        return {"kind": "json", "text": json.dumps(parsed, indent=2, ensure_ascii=False)}
    # The stored parsed value comes back from jsonb with its keys reordered (shortest first);
    # the draft's own text keeps the order the model wrote, which is the schema's order.
    parsed = _in_written_order(content, parsed)
    fields = _dict(components.get("fields"))
    values = _dict(components.get("values"))
    spans = _dict(components.get("field_spans"))
    low_fields = set(components.get("low_fields") or ())

    def node(value, path):
        key = field_path(path)
        if isinstance(value, str):
            return {"type": "text", "segments": _segments(value, spans.get(key))}
        if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
            items = []
            for i, item in enumerate(value):
                certainty = _number(values.get(field_path((*path, i))))
                items.append({"low": certainty is not None and certainty < LOW_CERTAINTY,
                              "certainty": certainty, "value": node(item, (*path, i))})
            return {"type": "list", "items": items}
        if isinstance(value, (dict, list)):
            return {"type": "json", "text": json.dumps(value, indent=2, ensure_ascii=False)}
        return {"type": "text", "segments": [{"text": json.dumps(value), "low": False}]}

    return {
        "kind": "fields",
        "fields": [
            {"label": _label(key), "certainty": _number(fields.get(key)), "low": key in low_fields,
             "value": node(value, (key,))}
            for key, value in parsed.items()
        ],
    }


def _dict(value):
    return value if isinstance(value, dict) else {}


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _segments(text: str, spans) -> list[dict]:
    """``text`` cut into plain and low-certainty pieces; spans that do not fit are dropped."""
    pieces, pos = [], 0
    for span in spans if isinstance(spans, list) else ():
        if not isinstance(span, dict):
            continue
        start, end = span.get("start"), span.get("end")
        if not (isinstance(start, int) and isinstance(end, int) and pos <= start < end <= len(text)):
            continue
        if start > pos:
            pieces.append({"text": text[pos:start], "low": False})
        pieces.append({"text": text[start:end], "low": True, "p": _number(span.get("p"))})
        pos = end
    if pos < len(text) or not pieces:
        pieces.append({"text": text[pos:], "low": False})
    return pieces


_ATTEMPT_LABELS = {"draft": "First answer", "repair": "Repair", "cascade": "Larger model", "sample": "Second sample"}


@register.filter
def attempt_label(purpose: str) -> str:
    return _ATTEMPT_LABELS.get(purpose, purpose)

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
    return [(key.replace("_", " ").capitalize(), value) for key, value in document.items()]


@register.filter
def is_list(value):
    return isinstance(value, list)

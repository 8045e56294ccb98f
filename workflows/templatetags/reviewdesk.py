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
    except (TypeError, ValueError):
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

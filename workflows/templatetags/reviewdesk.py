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

from django import template

register = template.Library()


@register.filter
def percent(value, digits=1):
    """0.0183 -> '1.8%'; None -> an em dash."""
    if value is None or value == "":
        return "—"
    return f"{float(value) * 100:.{int(digits)}f}%"

"""A small reader for rendered pages: find elements by id or attribute and see where they sit.

Assertions on raw substrings cannot tell whether an error message is beside its field or
somewhere else on the page; walking the parsed tree can.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.test.html import Element, parse_html


@dataclass
class Node:
    element: Element
    ancestors: tuple[Element, ...]

    @property
    def attrs(self) -> dict[str, str | None]:
        return dict(self.element.attributes)

    @property
    def text(self) -> str:
        return " ".join(_texts(self.element)).strip()

    def nearest(self, css_class: str) -> Element | None:
        """The closest ancestor carrying ``css_class``."""
        for ancestor in reversed(self.ancestors):
            if css_class in (dict(ancestor.attributes).get("class") or "").split():
                return ancestor
        return None


def _matches(have, want, key) -> bool:
    # class="a b" matches any element carrying both classes, in any order.
    if key == "class":
        return have is not None and set(want.split()) <= set(have.split())
    return have == want


def _texts(node):
    for child in node.children:
        if isinstance(child, Element):
            yield from _texts(child)
        else:
            yield child


def _walk(node, ancestors=()):
    if isinstance(node, Element):
        yield Node(node, ancestors)
        for child in node.children:
            yield from _walk(child, ancestors + (node,))


class Page:
    def __init__(self, response):
        self.html = response.content.decode()
        self.nodes = list(_walk(parse_html(self.html)))

    def all(self, tag: str | None = None, **attrs) -> list[Node]:
        wanted = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        found = []
        for node in self.nodes:
            if tag and node.element.name != tag:
                continue
            have = node.attrs
            if all(_matches(have.get(k), v, k) for k, v in wanted.items()):
                found.append(node)
        return found

    def by_id(self, element_id: str) -> Node | None:
        matches = self.all(id=element_id)
        assert len(matches) <= 1, f"id {element_id!r} appears {len(matches)} times"
        return matches[0] if matches else None

    def value(self, field: str):
        """What a form control named ``field`` shows: input value, textarea text, selected option."""
        node = self.by_id(f"id_{field}")
        assert node is not None, f"no control with id id_{field}"
        tag = node.element.name
        if tag == "textarea":
            return node.text
        if tag == "select":
            selected = [
                dict(n.element.attributes).get("value")
                for n in self.nodes
                if n.element.name == "option" and node.element in n.ancestors and "selected" in n.attrs
            ]
            return selected[0] if len(selected) == 1 else (selected or "")
        if node.attrs.get("type") == "checkbox":
            return "checked" in node.attrs
        return node.attrs.get("value") or ""

"""``{{item.x}}`` and ``{{sample.output_text}}`` references, as OpenAI's Evals resolve them.

A reference names a namespace (``item`` or ``sample``) and a dotted path into it. A path
that is not there is an error naming it (never an empty string silently sent to a model),
so a template over a missing field is refused when the eval is created, not mid-run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

REFERENCE = re.compile(r"\{\{\s*([A-Za-z_][\w]*)((?:\.[\w-]+)*)\s*\}\}")
NAMESPACES = ("item", "sample")


class TemplateError(ValueError):
    def __init__(self, reference: str, reason: str) -> None:
        super().__init__(f"'{{{{{reference}}}}}' {reason}")
        self.reference = reference


def references(text: str) -> list[tuple[str, list[str]]]:
    """(namespace, path) of every reference in ``text``."""
    return [(m.group(1), [p for p in m.group(2).split(".") if p]) for m in REFERENCE.finditer(text)]


def lookup(namespaces: dict[str, Any], namespace: str, path: list[str]) -> Any:
    reference = ".".join([namespace, *path])
    if namespace not in namespaces:
        raise TemplateError(reference, f"uses an unknown namespace (use {' or '.join(NAMESPACES)})")
    value = namespaces[namespace]
    for part in path:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise TemplateError(reference, "names a field the data does not have")
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def render(text: str, namespaces: dict[str, Any]) -> str:
    return REFERENCE.sub(
        lambda m: _text(lookup(namespaces, m.group(1), [p for p in m.group(2).split(".") if p])),
        text,
    )


def resolve(text: str, namespaces: dict[str, Any]) -> Any:
    """A string that is exactly one reference resolves to the value itself (a list stays a
    list: ``item_reference``); anything else renders to text."""
    match = REFERENCE.fullmatch(text.strip())
    if match:
        return lookup(namespaces, match.group(1), [p for p in match.group(2).split(".") if p])
    return render(text, namespaces)


def check_against_schema(text: str, item_schema: dict[str, Any], *, has_sample: bool) -> None:
    """Refuse references the eval's data can never satisfy: an ``item`` field missing from
    ``item_schema.properties`` (when it lists them), or ``sample`` without sampling."""
    properties = item_schema.get("properties") if isinstance(item_schema, dict) else None
    for namespace, path in references(text):
        reference = ".".join([namespace, *path])
        if namespace not in NAMESPACES:
            raise TemplateError(reference, "uses an unknown namespace (use item or sample)")
        if (
            namespace == "item"
            and isinstance(properties, dict)
            and properties
            and path
            and path[0] not in properties
        ):
            raise TemplateError(
                reference,
                f"names a field the eval's item_schema does not define "
                f"(it has: {', '.join(sorted(properties)) or 'none'})",
            )
        if namespace == "sample" and not has_sample:
            raise TemplateError(
                reference,
                "refers to a sample, but the eval's data_source_config does not include one "
                "(set include_sample_schema: true)",
            )


def strings_in(value: Any) -> Iterable[str]:
    """Every string inside a grader or message template (where references may hide)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, inner in value.items():
            if key not in ("type", "role", "name", "model", "operation", "evaluation_metric"):
                yield from strings_in(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from strings_in(inner)

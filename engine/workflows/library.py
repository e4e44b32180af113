"""The shipped workflow templates (``data/templates/*.yaml``), installable in one click."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import yaml

from engine.config import PROJECT_ROOT
from engine.errors import Conflict, NotFound
from engine.permissions import Actor
from engine.workflows import spec as specs, store

TEMPLATES = PROJECT_ROOT / "data" / "templates"


@dataclass(frozen=True)
class Template:
    id: str
    name: str
    description: str
    source: str


@lru_cache(maxsize=1)
def list_templates() -> tuple[Template, ...]:
    out = []
    for path in sorted(TEMPLATES.glob("*.yaml")):
        source = path.read_text(encoding="utf-8")
        spec = specs.parse(source)
        out.append(Template(path.stem, spec.name, spec.description, source))
    return tuple(out)


def install(actor: Actor, template_id: str) -> store.WorkflowView:
    """The template as a new workflow; a second install gets a numbered name."""
    template = next((t for t in list_templates() if t.id == template_id), None)
    if template is None:
        raise NotFound(f"There is no template {template_id!r}.")
    for n in range(1, 100):
        source = template.source
        if n > 1:
            data = yaml.safe_load(source)
            data["name"] = f"{template.name} {n}"
            source = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        try:
            return store.create(actor, source)
        except Conflict:
            continue
    raise Conflict("This template is installed 99 times already; rename some copies first.")

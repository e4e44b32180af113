"""Filling node params from run inputs and earlier nodes' outputs with Jinja2.

Templates are user input, so they run in Jinja's sandbox with ``StrictUndefined``: a name that
does not exist is an error, never a silent empty string. A string that is one expression and
nothing else (``"{{ nodes.fetch.body.items }}"``) keeps the value's own type, so a list stays a
list; anything else renders to text.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta
from jinja2.runtime import Undefined
from jinja2.sandbox import SandboxedEnvironment

from engine.errors import InvalidInput

_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_env.filters["tojson"] = lambda v, indent=None: json.dumps(v, indent=indent, default=str)
_env.filters["fromjson"] = lambda s: json.loads(s)
_ONE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\s*$", re.S)


@lru_cache(maxsize=4096)
def _expression(source: str):
    # Compiled once: runs of one workflow fill in the same templates again and again.
    return _env.compile_expression(source, undefined_to_none=False)


@lru_cache(maxsize=4096)
def _template(source: str):
    return _env.from_string(source)


def strings(value: Any, path: tuple = ()):
    """Every string inside a params structure, with where it is."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from strings(v, (*path, i))


def names_used(text: str) -> set[str]:
    """The top-level names a template refers to; raises ``TemplateSyntaxError``."""
    return meta.find_undeclared_variables(_env.parse(text))


def check_syntax(text: str) -> None:
    _env.parse(text)


def render(value: Any, context: dict[str, Any], *, where: str = "") -> Any:
    """``value`` with every string in it filled in; ``InvalidInput`` names the template that failed."""
    if isinstance(value, dict):
        return {k: render(v, context, where=f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context, where=f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "{" not in value:
        return value
    try:
        one = _ONE_EXPRESSION.match(value)
        if one:
            result = _expression(one["expr"])(**context)
            if isinstance(result, Undefined):
                str(result)  # StrictUndefined raises here, naming what was missing
            return result
        return _template(value).render(context)
    except TemplateError as exc:
        label = f" in {where}" if where else ""
        raise InvalidInput(f"The template{label} cannot be filled in: {exc.message or exc}.") from None
    except (TypeError, ValueError, ArithmeticError) as exc:
        label = f" in {where}" if where else ""
        raise InvalidInput(f"The template{label} failed: {exc}.") from None


def truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "no", "0", "none", "null")
    return bool(value)


__all__ = ["render", "check_syntax", "names_used", "strings", "truthy", "TemplateSyntaxError"]

"""Workflow specs: YAML (or JSON) validated by pydantic, with errors that name the line and the field.

A spec is refused at save, never half-run, when it has a cycle, a node type that does not exist,
a ``needs`` that names no node (or a branch the node cannot take), params a node does not know,
a template that does not parse or refers to a name that will not exist, or an input whose default
is not of its type. ``needs`` entries are ``node`` (it succeeded, or failed under ``continue``) or
``node:branch``: a condition's ``then``/``else``, a switch's case or ``default``, or ``error`` for
a node whose ``on_error`` is ``route``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.errors import InvalidInput
from engine.workflows import nodes, templates

MAX_SOURCE_CHARS = 200_000
NODE_ID = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
INPUT_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict}
RESERVED = {"inputs", "nodes", "item", "index", "error", "run", "steps"}


class SpecError(InvalidInput):
    """A spec that cannot be saved; ``problems`` lists each (line, where, message)."""

    def __init__(self, problems: list[tuple[int | None, str, str]]):
        self.problems = problems
        super().__init__("; ".join(_describe(p) for p in problems[:5]) + (" …" if len(problems) > 5 else ""))


def _describe(problem: tuple[int | None, str, str]) -> str:
    line, where, message = problem
    return f"{f'line {line}, ' if line else ''}{where}: {message}" if where else (
        f"line {line}: {message}" if line else message)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpec(_Model):
    type: Literal["string", "integer", "number", "boolean", "array", "object"] = "string"
    default: Any = None
    required: bool | None = None
    description: str = ""

    def is_required(self) -> bool:
        return self.required if self.required is not None else self.default is None


class RetrySpec(_Model):
    max_attempts: int = Field(1, ge=1, le=20)
    backoff_s: float = Field(1.0, ge=0, le=3600)
    max_backoff_s: float = Field(300.0, ge=0, le=86400)


class NodeSpec(_Model):
    id: str = Field(pattern=NODE_ID)
    type: str
    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    needs: list[str] = Field(default_factory=list)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    timeout_s: float = Field(300.0, gt=0, le=86400)
    on_error: Literal["fail", "continue", "route"] = "fail"

    @field_validator("needs", mode="before")
    @classmethod
    def _one_need(cls, v):
        return [v] if isinstance(v, str) else v


class WorkflowSpec(_Model):
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    nodes: list[NodeSpec] = Field(min_length=1, max_length=500)
    outputs: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(3600.0, gt=0, le=7 * 86400)
    on_failure: list[NodeSpec] = Field(default_factory=list)

    def node(self, node_id: str) -> NodeSpec:
        return next(n for n in self.nodes if n.id == node_id)


@dataclass(frozen=True)
class Need:
    node: str
    branch: str | None

    @classmethod
    def parse(cls, text: str) -> Need:
        node, _, branch = text.partition(":")
        return cls(node.strip(), branch.strip() or None)


# --- reading the source with line numbers ---------------------------------------------------


def _lines(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out[(*path, key.value)] = key.start_mark.line + 1
            _lines(value, (*path, key.value), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            _lines(value, (*path, i), out)
    return out


def _line_of(lines: dict[tuple, int], loc: tuple) -> int | None:
    loc = tuple(loc)
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc)


def _where(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def load(source: str) -> tuple[dict, dict[tuple, int]]:
    """The document as data, and the line of every path in it."""
    if not source or not source.strip():
        raise SpecError([(None, "", "The spec is empty. Start with name: and nodes:.")])
    if len(source) > MAX_SOURCE_CHARS:
        raise SpecError([(None, "", f"The spec is {len(source):,} characters; the limit is {MAX_SOURCE_CHARS:,}.")])
    try:
        tree = yaml.compose(source, Loader=yaml.SafeLoader)
        data = yaml.safe_load(source)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise SpecError([(mark.line + 1 if mark else None, "", f"not valid YAML or JSON: {exc.problem}")]) from None
    except yaml.YAMLError as exc:
        raise SpecError([(None, "", f"not valid YAML or JSON: {exc}")]) from None
    if not isinstance(data, dict):
        raise SpecError([(1, "", "A spec is a mapping with name:, inputs:, nodes: and outputs:.")])
    return data, _lines(tree) if tree is not None else {}


# --- validation -----------------------------------------------------------------------------


def parse(source: str) -> WorkflowSpec:
    """A spec from YAML or JSON text, or ``SpecError`` listing every problem with its line."""
    data, lines = load(source)
    return validate(data, lines)


def validate(data: dict, lines: dict[tuple, int] | None = None) -> WorkflowSpec:
    lines = lines or {}
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError([(_line_of(lines, e["loc"]), _where(e["loc"]), e["msg"]) for e in exc.errors()]) from None
    problems: list[tuple[tuple, str]] = []
    _check_inputs(spec, problems)
    _check_nodes(spec.nodes, "nodes", {n.id for n in spec.nodes}, spec, problems)
    _check_nodes(spec.on_failure, "on_failure", {n.id for n in spec.nodes} | {n.id for n in spec.on_failure},
                 spec, problems, flow=False)
    if not problems:
        cycle = find_cycle(spec)
        if cycle:
            problems.append((("nodes",), f"the needs form a cycle: {' → '.join(cycle)}. A node cannot wait on itself."))
    _check_templates(spec.outputs, ("outputs",), {n.id for n in spec.nodes}, spec, problems)
    if problems:
        raise SpecError([(_line_of(lines, loc), _where(loc), msg) for loc, msg in problems])
    return spec


def _check_inputs(spec: WorkflowSpec, problems: list) -> None:
    for name, inp in spec.inputs.items():
        if not name.isidentifier():
            problems.append((("inputs", name), "an input name is letters, digits and _, not starting with a digit"))
        if inp.default is not None and not _is_type(inp.default, inp.type):
            problems.append((("inputs", name, "default"), f"the default {inp.default!r} is not of type {inp.type}"))


def _check_nodes(items: list[NodeSpec], section: str, known: set[str], spec: WorkflowSpec, problems: list,
                 flow: bool = True) -> None:
    seen: set[str] = set()
    types = nodes.types()
    by_id = {n.id: n for n in spec.nodes}
    for i, n in enumerate(items):
        loc = (section, i)
        if n.id in seen or (section == "on_failure" and n.id in by_id):
            problems.append(((*loc, "id"), f"the id {n.id!r} is used twice; every node needs its own id"))
        seen.add(n.id)
        if n.id in RESERVED:
            problems.append(((*loc, "id"), f"{n.id!r} is a reserved name; choose another id"))
        node_type = types.get(n.type)
        if node_type is None:
            problems.append(((*loc, "type"), f"unknown node type {n.type!r}; use one of {', '.join(sorted(types))}"))
        else:
            fields = node_type.params.model_fields
            for key in n.params:
                if key not in fields:
                    problems.append(((*loc, "params", key), f"a {n.type} node has no param {key!r}; it takes "
                                     f"{', '.join(fields) or 'none'}"))
            for key, f in fields.items():
                if f.is_required() and key not in n.params:
                    problems.append(((*loc, "params"), f"a {n.type} node needs the param {key!r}"))
            for message in (node_type.check(n.params) if node_type.check else []):
                problems.append(((*loc, "params"), message))
        for j, text in enumerate(n.needs if flow else []):
            need = Need.parse(text)
            if need.node not in by_id or need.node == n.id:
                problems.append(((*loc, "needs", j), f"{text!r} names no other node; nodes are "
                                 f"{', '.join(sorted(by_id))}"))
                continue
            if need.branch is not None:
                allowed = branches_of(by_id[need.node])
                if need.branch not in allowed:
                    problems.append(((*loc, "needs", j), f"{need.node!r} has no branch {need.branch!r}; it has "
                                     f"{', '.join(sorted(allowed)) or 'none'}"))
        if not flow and n.needs:
            problems.append(((*loc, "needs"), "error handlers run in order; they take no needs"))
        skip = node_type.verbatim if node_type else frozenset()
        _check_templates({k: v for k, v in n.params.items() if k not in skip}, (*loc, "params"), known, spec,
                         problems)


def branches_of(n: NodeSpec) -> set[str]:
    found = set()
    node_type = nodes.TYPES.get(n.type)
    if node_type is not None and node_type.branches is not None:
        found |= node_type.branches(n.params)
    if n.on_error == "route":
        found.add("error")
    return found


def _check_templates(value: Any, loc: tuple, known: set[str], spec: WorkflowSpec, problems: list) -> None:
    names = known | {"inputs", "nodes", "item", "index", "error", "run", "steps"}
    for path, text in templates.strings(value):
        if "{" not in text:
            continue
        try:
            used = templates.names_used(text)
        except templates.TemplateSyntaxError as exc:
            problems.append(((*loc, *path), f"template error: {exc.message}"))
            continue
        unknown = sorted(used - names)
        if unknown:
            problems.append(((*loc, *path), f"the template uses {', '.join(unknown)}, which is neither an input "
                             "(write inputs.NAME) nor a node's id"))


def find_cycle(spec: WorkflowSpec) -> list[str] | None:
    graph = {n.id: [Need.parse(x).node for x in n.needs] for n in spec.nodes}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in graph.get(node, []):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


# --- inputs at trigger time -----------------------------------------------------------------


def _is_type(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, INPUT_TYPES[kind])


def coerce_inputs(spec: WorkflowSpec, given: dict[str, Any] | None) -> dict[str, Any]:
    """The run's inputs: defaults filled in, text from a form or the CLI turned into the declared type."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(spec.inputs))
    if unknown:
        raise InvalidInput(f"This workflow has no input {', '.join(map(repr, unknown))}; its inputs are "
                           f"{', '.join(spec.inputs) or 'none'}.")
    out: dict[str, Any] = {}
    for name, inp in spec.inputs.items():
        if name not in given or given[name] is None or given[name] == "":
            if inp.default is not None:
                out[name] = inp.default
            elif inp.is_required():
                raise InvalidInput(f"The input {name!r} ({inp.type}) is required.")
            else:
                out[name] = None
            continue
        out[name] = _coerce(name, given[name], inp.type)
    return out


def _coerce(name: str, value: Any, kind: str) -> Any:
    if isinstance(value, str) and kind != "string":
        try:
            if kind == "boolean" and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
                return value.strip().lower() in ("true", "yes", "1")
            value = json.loads(value)
        except json.JSONDecodeError:
            raise InvalidInput(f"The input {name!r} must be of type {kind}; {value!r} is not.") from None
    if kind == "number" and isinstance(value, float | int) and not isinstance(value, bool):
        return value
    if not _is_type(value, kind):
        raise InvalidInput(f"The input {name!r} must be of type {kind}; {value!r} is not.")
    return value


def dump(spec: WorkflowSpec) -> dict:
    return spec.model_dump(mode="json", exclude_defaults=False)


def from_stored(data: dict) -> WorkflowSpec:
    return WorkflowSpec.model_validate(data)

"""transform, condition and switch: reshaping data and choosing branches, with no side effects.

transform's ``value`` is a Jinja2 template (already filled in when the node runs); ``jsonpath``
picks from ``data`` with RFC 9535 JSONPath (python-jsonpath): one path gives the list of
matches (or the first with ``first: true``), a mapping of paths gives one key per path.
"""

from __future__ import annotations

from typing import Any

import jsonpath
from pydantic import Field

from engine.workflows.nodes import NodeContext, NodeFailed, NodeResult, NodeType, Params, register
from engine.workflows.templates import truthy


class TransformParams(Params):
    value: Any = None
    jsonpath: str | dict[str, str] | None = None
    data: Any = None
    first: bool = False


class ConditionParams(Params):
    when: Any


class SwitchParams(Params):
    value: Any
    cases: list[str] = Field(min_length=1)


def _select(path: str, data: Any, first: bool) -> Any:
    try:
        found = jsonpath.findall(path, data)
    except jsonpath.JSONPathError as exc:
        raise NodeFailed(f"The JSONPath {path!r} is not valid: {exc}", retry=False) from None
    return (found[0] if found else None) if first else found


def _check_paths(params: dict) -> list[str]:
    paths = params.get("jsonpath")
    paths = [paths] if isinstance(paths, str) else list((paths or {}).values()) if isinstance(paths, dict) else []
    problems = []
    for path in paths:
        if "{{" in path:
            continue
        try:
            jsonpath.compile(path)
        except jsonpath.JSONPathError as exc:
            problems.append(f"the JSONPath {path!r} is not valid: {exc}")
    if params.get("jsonpath") is None and "value" not in params:
        problems.append("a transform needs value: (a template) or jsonpath: with data:")
    return problems


def run_transform(ctx: NodeContext, p: TransformParams) -> NodeResult:
    if p.jsonpath is None:
        return NodeResult(p.value)
    if isinstance(p.jsonpath, str):
        return NodeResult(_select(p.jsonpath, p.data, p.first))
    return NodeResult({key: _select(path, p.data, p.first) for key, path in p.jsonpath.items()})


def run_condition(ctx: NodeContext, p: ConditionParams) -> NodeResult:
    result = truthy(p.when)
    return NodeResult({"result": result, "branch": "then" if result else "else"}, branch="then" if result else "else")


def run_switch(ctx: NodeContext, p: SwitchParams) -> NodeResult:
    value = "" if p.value is None else str(p.value).strip()
    branch = value if value in p.cases else "default"
    return NodeResult({"value": p.value, "branch": branch}, branch=branch)


def _switch_branches(params: dict) -> set[str]:
    cases = params.get("cases")
    return {str(c) for c in cases} | {"default"} if isinstance(cases, list) else {"default"}


register(NodeType("transform", TransformParams, run_transform, check=_check_paths, pure=True,
                  summary="reshape data with a template or JSONPath"))
register(NodeType("condition", ConditionParams, run_condition, branches=lambda _p: {"then", "else"}, pure=True,
                  summary="if/else: dependants need node:then or node:else"))
register(NodeType("switch", SwitchParams, run_switch, branches=_switch_branches, pure=True,
                  summary="route to the branch named by a value (or default)"))

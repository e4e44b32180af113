"""The python node: the user's ``def main(data):`` run by ``engine.workflows.python_sandbox``.

The sandbox (a separate process as an unprivileged user, with CPU, memory, file, process and
wall-clock limits and no network where the host allows it) lives in its own module and is
imported only when a python node runs, so hosts without it still run every other node.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import Field

from engine.workflows.nodes import NodeContext, NodeFailed, NodeResult, NodeType, Params, register


class PythonParams(Params):
    code: str = Field(min_length=1, max_length=100_000)
    data: Any = None
    # Tighter or looser than the sandbox's defaults, within its fixed ceilings.
    cpu_s: float | None = None
    memory_mb: int | None = None
    wall_s: float | None = None


def run_python(ctx: NodeContext, p: PythonParams) -> NodeResult:
    try:
        from engine.workflows.python_sandbox import Limits, PythonFailed, SandboxUnavailable, run_python as run
    except ImportError:
        raise NodeFailed("The python node is not available in this installation (its sandbox module is missing).",
                         retry=False) from None
    chosen = {k: v for k, v in (("cpu_s", p.cpu_s), ("memory_mb", p.memory_mb), ("wall_s", p.wall_s)) if v is not None}
    try:
        result = run(p.code, p.data, limits=replace(Limits(), **chosen))
    except SandboxUnavailable as exc:
        raise NodeFailed(str(exc), retry=False) from None
    except PythonFailed as exc:
        # The same code on the same data fails the same way; only a wall-clock end may be the host's doing.
        transient = getattr(exc, "kind", "") in ("timeout", "killed", "no_result")
        logs = getattr(exc, "logs", "")
        raise NodeFailed(str(exc) + (f"\n{logs[-2000:]}" if logs else ""), retry=transient) from None
    return NodeResult(result.output, logs=result.logs or "")


def _check(params: dict) -> list[str]:
    code = params.get("code")
    if isinstance(code, str) and "{{" not in code and "def main" not in code:
        return ["the code must define main(data) and return a JSON value"]
    return []


register(NodeType("python", PythonParams, run_python, check=_check, verbatim=frozenset({"code"}), summary="your Python code in a sandbox"))

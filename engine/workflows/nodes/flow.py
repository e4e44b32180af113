"""map, delay and sub_workflow: nodes that run other nodes, wait, or start another workflow.

map runs its ``steps`` (a short chain of node specs) once per item, ``concurrency`` items at a
time; inside, templates see ``item``, ``index`` and ``steps.<id>`` (earlier steps for this item).
The map step is checkpointed as a whole: it succeeds once every item has.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import Field, ValidationError

from engine.workflows.nodes import NodeContext, NodeFailed, NodeResult, NodeType, Params, register

MAX_ITEMS = 10_000


class MapParams(Params):
    items: Any
    steps: list[dict] = Field(min_length=1, max_length=20)
    concurrency: int = Field(4, ge=1, le=32)


class DelayParams(Params):
    seconds: float = Field(ge=0, le=7 * 86400)


class SubWorkflowParams(Params):
    workflow: str = Field(min_length=1)
    inputs: dict[str, Any] = Field(default_factory=dict)


def _check_steps(params: dict) -> list[str]:
    from engine.workflows import nodes, spec

    problems = []
    steps = params.get("steps")
    if not isinstance(steps, list):
        return ["steps: is a list of nodes (id, type, params) run for each item"]
    ids = set()
    for i, raw in enumerate(steps):
        try:
            step = spec.NodeSpec.model_validate(raw)
        except ValidationError as exc:
            problems.append(f"steps[{i}]: {exc.errors()[0]['msg']}")
            continue
        ids.add(step.id)
        node_type = nodes.types().get(step.type)
        if node_type is None or step.type in ("map", "approval"):
            problems.append(f"steps[{i}]: a map step cannot be of type {step.type!r}")
        elif unknown := set(step.params) - set(node_type.params.model_fields):
            problems.append(f"steps[{i}]: a {step.type} node has no param {sorted(unknown)[0]!r}")
    if len(ids) != len(steps):
        problems.append("every map step needs its own id")
    return problems


def run_map(ctx: NodeContext, p: MapParams) -> NodeResult:
    if not isinstance(p.items, list):
        raise NodeFailed(f"map's items must be a list; it is {type(p.items).__name__}.", retry=False)
    if len(p.items) > MAX_ITEMS:
        raise NodeFailed(f"map takes at most {MAX_ITEMS:,} items; it was given {len(p.items):,}.", retry=False)
    assert ctx.call is not None

    def one(index: int, item: Any) -> Any:
        if ctx.cancelled.is_set():
            raise NodeFailed("The run was cancelled.", retry=False)
        variables = {**ctx.variables, "item": item, "index": index, "steps": {}}
        last = None
        for step in p.steps:
            last = ctx.call(step, variables, f"{ctx.node_id}[{index}].{step['id']}").output
            variables["steps"][step["id"]] = last
        return last

    with ThreadPoolExecutor(max_workers=min(p.concurrency, max(1, len(p.items))),
                            thread_name_prefix=f"map-{ctx.node_id}") as pool:
        futures = [pool.submit(one, i, item) for i, item in enumerate(p.items)]
        results = []
        for i, f in enumerate(futures):
            try:
                results.append(f.result())
            except NodeFailed as exc:
                raise NodeFailed(f"item {i}: {exc}", retry=exc.retry) from None
    return NodeResult(results, logs=f"{len(results)} item(s)")


def run_delay(ctx: NodeContext, p: DelayParams) -> NodeResult:
    if not ctx.dry_run and ctx.cancelled.wait(p.seconds):
        raise NodeFailed("The run was cancelled during the delay.", retry=False)
    return NodeResult({"waited_s": p.seconds if not ctx.dry_run else 0})


def run_sub_workflow(ctx: NodeContext, p: SubWorkflowParams) -> NodeResult:
    if ctx.dry_run:
        return NodeResult({"dry_run": True, "workflow": p.workflow})
    assert ctx.subrun is not None
    return NodeResult(ctx.subrun(p.workflow, p.inputs))


register(NodeType("map", MapParams, run_map, lazy=frozenset({"steps"}), check=_check_steps,
                  summary="run steps for each item of a list"))
register(NodeType("delay", DelayParams, run_delay, summary="wait some seconds"))
register(NodeType("sub_workflow", SubWorkflowParams, run_sub_workflow, side_effects=True,
                  summary="run another workflow and use its outputs"))

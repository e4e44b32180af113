"""llm, image and speech nodes: one call each through ``engine.generation`` (priced, budgeted, in the ledger).

The ledger row carries the run's id and project, and a request id made of the run, node and
attempt: a step that succeeded is checkpointed and never called again, and a retry is a new
request, never the same one charged twice.
"""

from __future__ import annotations

import json
from decimal import Decimal

from pydantic import Field

from engine import generation
from engine.errors import Conflict, InvalidInput, MeterbookError, NotFound, PermissionDenied
from engine.workflows.nodes import NodeContext, NodeFailed, NodeResult, NodeType, Params, register


class LlmParams(Params):
    prompt: str = Field(min_length=1)
    system: str | None = None
    model: str | None = None  # "connection/model"; None uses the workspace's route
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    temperature: float | None = Field(None, ge=0, le=2)
    json_output: bool = False  # parse the answer as JSON (the output's ``data``)


class ImageParams(Params):
    prompt: str = Field(min_length=1)
    model: str | None = None
    n: int = Field(1, ge=1, le=8)
    size: str | None = None


class SpeechParams(Params):
    text: str = Field(min_length=1)
    model: str | None = None
    voice: str | None = None


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _call(ctx: NodeContext, req: generation.GenerationRequest) -> generation.Generation | dict:
    """The call's result; in a dry run, what it would cost (nothing is called or reserved)."""
    if ctx.dry_run:
        try:
            est = generation.estimate(req, ctx.actor)
        except MeterbookError as exc:
            raise NodeFailed(f"Cannot estimate this call: {exc}", retry=False) from None
        if est.cost is not None:
            ctx.estimated_cost.append(est.cost)
        return {"model": est.target, "estimated_cost": _money(est.cost), "input_tokens": est.input_tokens,
                "dry_run": True}
    try:
        return generation.generate(req, ctx.actor)
    except (InvalidInput, NotFound, PermissionDenied, Conflict) as exc:
        raise NodeFailed(str(exc), retry=False) from None
    except MeterbookError as exc:  # no route left, a budget's limit: worth another attempt later
        raise NodeFailed(str(exc)) from None


def _request(ctx: NodeContext, kind: str, prompt: str, model: str | None, **extra) -> generation.GenerationRequest:
    return generation.GenerationRequest(kind=kind, prompt=prompt, target=model, project_id=ctx.project_id,
                                        workflow_run_id=ctx.run_id, request_id=ctx.request_id(),
                                        tags=("workflow",), **extra)


def _common(g: generation.Generation) -> dict:
    return {"model": g.target, "cost": _money(g.cost), "ledger_id": g.ledger_id, "request_id": g.request_id}


def run_llm(ctx: NodeContext, p: LlmParams) -> NodeResult:
    g = _call(ctx, _request(ctx, "text", p.prompt, p.model, system=p.system, max_tokens=p.max_tokens,
                            temperature=p.temperature))
    if isinstance(g, dict):
        return NodeResult({"text": "", "data": None, **g})
    out = {"text": g.text, "input_tokens": g.usage.input_tokens, "output_tokens": g.usage.output_tokens, **_common(g)}
    if p.json_output:
        text = g.text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
        try:
            out["data"] = json.loads(text)
        except json.JSONDecodeError:
            raise NodeFailed("The answer was asked for as JSON but is not JSON: " + g.text[:200]) from None
    return NodeResult(out, logs=f"{g.target}: {g.usage.input_tokens} in, {g.usage.output_tokens} out, "
                                f"${g.cost if g.cost is not None else '?'}")


def run_image(ctx: NodeContext, p: ImageParams) -> NodeResult:
    params = {"n": p.n, **({"size": p.size} if p.size else {})}
    g = _call(ctx, _request(ctx, "image", p.prompt, p.model, params=params))
    if isinstance(g, dict):
        return NodeResult({"asset_ids": [], **g})
    return NodeResult({"asset_ids": list(g.asset_ids), **_common(g)}, logs=f"{g.target}: {len(g.asset_ids)} image(s)")


def run_speech(ctx: NodeContext, p: SpeechParams) -> NodeResult:
    params = {"voice": p.voice} if p.voice else {}
    g = _call(ctx, _request(ctx, "speech", p.text, p.model, params=params))
    if isinstance(g, dict):
        return NodeResult({"asset_ids": [], **g})
    return NodeResult({"asset_ids": list(g.asset_ids), **_common(g)}, logs=f"{g.target}: {len(p.text)} characters")


register(NodeType("llm", LlmParams, run_llm, ai=True, summary="a text answer from a model"))
register(NodeType("image", ImageParams, run_image, ai=True, summary="images from a model"))
register(NodeType("speech", SpeechParams, run_speech, ai=True, summary="speech audio from text"))

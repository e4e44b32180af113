"""The one path every AI call takes: estimate, reserve, route, call, price, settle, record.

Pages, workflows, notebooks and reports call ``generate`` (or ``stream``; long image and video
jobs go through ``engine.media_jobs.submit``, which shares this path) and nothing else to reach a model, so every cent lands once in the ledger and every budget sees it::

    1. plan limits            guards.plan.check
    2. estimate               tokens.count_request + pricing (max output included: the worst case)
    3. reserve                guards.budgets.reserve, per attempt target
    4. route                  router.Router: priority/cost/latency, retries, fallbacks, breaker
    5. call                   providers.X.generate / stream
    6. price, settle, record  one transaction: ledger row, budget settlement, health, assets

Every attempt that reached a provider writes one ledger row keyed by (request id, attempt),
so running the same request again is refused rather than charged twice. The provider call
itself never runs inside a database transaction.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_CEILING, Decimal
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import exists, insert, select
from sqlalchemy.orm import Session

from engine import assets, budgets, db, guards, pricing, router, tokens
from engine.billing import limits as _plan_limits  # noqa: F401  (installs the plan hook)
from engine.dbtypes import utcnow
from engine.errors import Conflict, InvalidInput, NotFound
from engine.models import LedgerEntry, Project, ProviderConnection, RouteTarget
from engine.permissions import Actor, authorize
from engine.pricing import Price, UnpricedModel
from providers.base import (
    KINDS,
    Chunk,
    Message,
    ProviderError,
    RateLimited,
    Request,
    Result,
    Timeout,
    ToolCall,
    ToolSpec,
    TruncatedStream,
    Unavailable,
    Usage,
)

DEFAULT_MAX_TOKENS = 4096  # sent to the provider, so the reserved worst case really is the worst case
MAX_TAGS, MAX_TAG_LENGTH = 20, 64
ESTIMATED_USAGE_TAG = "usage:estimated"
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # what both OpenAI and Anthropic accept


@dataclass(frozen=True)
class GenerationRequest:
    """What a caller asks for. ``target`` is "connection/model"; None uses the workspace's route."""

    kind: str = "text"
    prompt: str = ""
    messages: tuple[Message, ...] = ()
    system: str | None = None
    target: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    project_id: int | None = None
    tags: tuple[str, ...] = ()
    workflow_run_id: int | None = None
    notebook_id: int | None = None
    report_id: int | None = None
    api_key_id: int | None = None
    request_id: str | None = None
    fallback: bool = True
    timeout: float = 120.0
    tools: tuple[ToolSpec, ...] = ()  # text only, with generate(): the answer may ask for them instead


@dataclass(frozen=True)
class Estimate:
    target: str
    input_tokens: int
    max_output_tokens: int
    exact: bool  # the prompt was counted with the vendor's own tokenizer
    cost: Decimal | None  # None: the model has no known price


@dataclass(frozen=True)
class Generation:
    request_id: str
    text: str
    asset_ids: tuple[int, ...]
    usage: Usage
    cost: Decimal | None
    estimated_cost: Decimal | None
    provider: str
    model: str
    target: str
    latency_ms: int
    ttft_ms: int | None
    attempts: int
    ledger_id: int
    finish_reason: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()  # the tools the model asked for; the caller runs them


# --- preparing a call -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    actor: Actor
    req: GenerationRequest
    request_id: str
    policy: router.Policy
    targets: list[router.Target]
    health: dict
    prompt_tokens: tokens.TokenCount
    max_tokens: int
    prices: pricing.PriceList
    skipped: tuple[tuple[str, str], ...] = ()  # targets left out before routing (no tool calling), with why


def _validate(req: GenerationRequest) -> GenerationRequest:
    if req.kind not in KINDS:
        raise InvalidInput(f"Unknown kind {req.kind!r}; choose one of {', '.join(KINDS)}.")
    if req.kind == "text" and not req.messages and not req.prompt.strip():
        raise InvalidInput("Write a prompt first.")
    if req.kind != "text" and not req.prompt.strip():
        raise InvalidInput(f"Describe the {req.kind} you want first.")
    if req.max_tokens is not None and not 0 < req.max_tokens <= 1_000_000:
        raise InvalidInput("Max tokens must be a whole number between 1 and 1,000,000.")
    if req.temperature is not None and not 0 <= req.temperature <= 2:
        raise InvalidInput("Temperature must be between 0 and 2.")
    tags = tuple(dict.fromkeys(t.strip() for t in req.tags if t and t.strip()))
    if len(tags) > MAX_TAGS or any(len(t) > MAX_TAG_LENGTH for t in tags):
        raise InvalidInput(f"Use at most {MAX_TAGS} tags of at most {MAX_TAG_LENGTH} characters each.")
    if req.request_id is not None and not 0 < len(req.request_id) <= 64:
        raise InvalidInput("A request id is 1 to 64 characters.")
    if req.tools:
        names = [t.name for t in req.tools]
        if req.kind != "text":
            raise InvalidInput("Only text calls can offer tools.")
        if len(set(names)) != len(names) or not all(_TOOL_NAME.fullmatch(n) for n in names):
            raise InvalidInput("Tool names must be unique, 1 to 64 letters, digits, '_' or '-'.")
    return replace(req, tags=tags)


def _pinned(s: Session, workspace_id: int, kind: str, target: str) -> router.Target:
    name, sep, model = target.partition("/")
    if not sep or not name or not model:
        raise InvalidInput(f"Choose a model as connection/model (like openai/gpt-4o), not {target!r}.")
    conn = s.scalar(select(ProviderConnection).where(
        ProviderConnection.workspace_id == workspace_id, ProviderConnection.name == name))
    if conn is None:
        raise NotFound(f"There is no provider connection called {name!r}. Add it under Providers.")
    if not conn.enabled:
        raise InvalidInput(f"The {name} connection is disabled. Enable it under Providers first.")
    route = s.scalar(select(RouteTarget).where(
        RouteTarget.workspace_id == workspace_id, RouteTarget.kind == kind,
        RouteTarget.connection_id == conn.id, RouteTarget.model == model))
    return router.target_for(conn, model, route)


def _load_routing(s: Session, workspace_id: int, req: GenerationRequest) -> router.Routing:
    policy = router.load_policy(s, workspace_id, req.kind)
    routed = router.load_targets(s, workspace_id, req.kind)
    pinned = _pinned(s, workspace_id, req.kind, req.target) if req.target else None
    if pinned is not None and not req.fallback:
        routed = []
    if pinned is None and not routed:
        raise InvalidInput(f"No model is set up for {req.kind} in this workspace. Add a provider and a model "
                           "under Providers, or choose one.")
    targets = ([pinned] if pinned else []) + [t for t in routed if pinned is None or t.key != pinned.key]
    return router.Routing(policy, targets, pinned, router.load_health(s, targets),
                          pricing.price_list(s, workspace_id, {(t.price_provider, t.model) for t in targets}))


def _plan(req: GenerationRequest, actor: Actor) -> _Plan:
    req = _validate(req)
    guards.plan.check(actor, req.kind)
    with db.read_session() as s:
        authorize(s, actor, "generate")
        if req.project_id is not None:
            project = s.get(Project, req.project_id)
            if project is None or project.workspace_id != actor.workspace_id:
                raise NotFound("That project does not exist in this workspace.")
            if project.archived_at is not None:
                raise InvalidInput(f"The project {project.name!r} is archived; choose an active one.")
        if req.request_id is not None and s.scalar(select(exists().where(LedgerEntry.request_id == req.request_id))):
            raise Conflict(f"Request {req.request_id} has already been run; start a new request to run it again.")
        routing = router.cached_routing(
            (actor.workspace_id, req.kind, req.target, req.fallback),
            lambda: _load_routing(s, actor.workspace_id, req),
        )
    policy, targets, pinned, health, prices = (routing.policy, routing.targets, routing.pinned, routing.health,
                                               routing.prices)
    skipped: tuple[tuple[str, str], ...] = ()
    if req.tools:
        targets, skipped = _tool_callers(targets, pinned)
    prompt_tokens = _count(req, targets[0])
    max_tokens = req.max_tokens or DEFAULT_MAX_TOKENS

    def cost_of(t: router.Target) -> Decimal | None:
        return _estimate_price(prices, t, req, prompt_tokens.tokens, max_tokens)

    ordered = router.order(targets, policy, health, cost_of, pinned)
    return _Plan(actor, req, req.request_id or uuid.uuid4().hex, policy, ordered, health, prompt_tokens, max_tokens,
                 prices, skipped)


def _tool_callers(targets: list[router.Target], pinned: router.Target | None
                  ) -> tuple[list[router.Target], tuple[tuple[str, str], ...]]:
    """The targets that can take a call offering tools, and the others with why they are left out.

    Decided here, before anything is reserved or sent: a chosen model that cannot call tools is
    refused in its own words; route targets that cannot are skipped (named in the message if
    every other one fails), so no answer ever comes from a model that silently dropped the tools.
    """
    import providers

    if pinned is not None and (why := providers.tools_refusal(pinned.provider_type)):
        raise InvalidInput(f"{pinned.label}: {why}")
    able = [t for t in targets if providers.tools_refusal(t.provider_type) is None]
    skipped = tuple((t.label, providers.tools_refusal(t.provider_type)) for t in targets if t not in able)
    if not able:
        raise InvalidInput("No model on this route can call tools. "
                           + "; ".join(f"{label}: {why}" for label, why in skipped))
    return able, skipped


def _count(req: GenerationRequest, target: router.Target) -> tokens.TokenCount:
    if req.kind != "text":
        return tokens.TokenCount(0, exact=True)
    return tokens.count_request(_provider_request(req, target.model, DEFAULT_MAX_TOKENS, ""), target.price_provider)


APPROXIMATE_MARGIN = Decimal("1.25")  # vendors' own tokenizers can count a prompt well above OpenAI's


def _reserved_tokens(count: tokens.TokenCount) -> int:
    """Prompt tokens to hold against budgets: the count itself only when it is the vendor's own."""
    if count.exact:
        return count.tokens
    return int((count.tokens * APPROXIMATE_MARGIN).to_integral_value(rounding=ROUND_CEILING)) + 16


def _worst_case(req: GenerationRequest, prompt_tokens: int, max_tokens: int) -> Usage:
    if req.kind == "text":
        return Usage(input_tokens=prompt_tokens, output_tokens=max_tokens)
    if req.kind == "image":
        return Usage(images=int(req.params.get("n", 1)))
    if req.kind == "speech":
        return Usage(characters=len(req.prompt))
    return Usage(seconds=Decimal(str(req.params.get("duration", 5))))


def _estimate_price(prices: pricing.PriceList, target: router.Target, req: GenerationRequest,
                    prompt_tokens: int, max_tokens: int) -> Decimal | None:
    try:
        return prices.price(target.price_provider, target.model, _worst_case(req, prompt_tokens, max_tokens)).total
    except UnpricedModel:
        return None


def estimate(req: GenerationRequest, actor: Actor) -> Estimate:
    """What the call would cost at most on the target it would go to first. Nothing is reserved."""
    plan = _plan(req, actor)
    first = plan.targets[0]
    cost = _estimate_price(plan.prices, first, plan.req, plan.prompt_tokens.tokens, plan.max_tokens)
    return Estimate(first.label, plan.prompt_tokens.tokens, plan.max_tokens if req.kind == "text" else 0,
                    plan.prompt_tokens.exact, cost)


def _provider_request(req: GenerationRequest, model: str, max_tokens: int, request_id: str) -> Request:
    messages = req.messages or ((Message("user", req.prompt),) if req.kind == "text" else ())
    return Request(kind=req.kind, model=model, messages=messages, prompt=req.prompt if req.kind != "text" else "",
                   system=req.system, max_tokens=max_tokens if req.kind == "text" else None,
                   temperature=req.temperature, params=dict(req.params), timeout=req.timeout,
                   request_id=request_id, tools=req.tools)


# --- the provider for a target --------------------------------------------------------------


def _provider(workspace_id: int, target: router.Target):
    return _cached_provider(workspace_id, target.connection_id, target.version)


@lru_cache(maxsize=256)
def _cached_provider(workspace_id: int, connection_id: int, version: str):
    """One client per connection version: SDK clients keep their connection pools between calls."""
    import providers
    from engine import connections

    view, config = connections.provider_config(None, workspace_id, connection_id)
    return providers.build(view.provider_type, config, name=view.name)


# --- recording ------------------------------------------------------------------------------


STATUS_OF = {RateLimited: "rate_limited", Timeout: "timeout", TruncatedStream: "truncated"}


def _status(exc: ProviderError) -> str:
    return next((s for cls, s in STATUS_OF.items() if isinstance(exc, cls)), "error")


def _reached_provider(exc: ProviderError) -> bool:
    """A refused connection never reached the vendor and cost nothing: no ledger row."""
    return not (isinstance(exc, Unavailable) and exc.status is None)


_INSERT_LEDGER = insert(LedgerEntry.__table__).returning(LedgerEntry.__table__.c.id)
_LEDGER_DEFAULTS = {f"cost_{c}": None for c in pricing.COMPONENTS}


class _Recorded(NamedTuple):
    id: int
    cost: Decimal | None
    latency_ms: int


@dataclass
class _Attempt:
    plan: _Plan
    target: router.Target
    number: int
    hold: Any
    estimated: Decimal | None
    provider: Any = None
    started: float = field(default_factory=time.perf_counter)
    ttft_ms: int | None = None

    @property
    def ctx(self) -> guards.CallContext:
        p = self.plan
        return guards.CallContext(p.actor.workspace_id, p.actor.user_id, p.req.api_key_id, p.req.project_id,
                                  p.req.kind, p.req.tags, self.target.price_provider, self.target.model,
                                  self.target.connection_id, p.request_id, self.number)

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)

    def record(self, usage: Usage, *, status: str, error: str | None, extra_tags: tuple[str, ...] = (),
               result: Result | None = None) -> tuple[_Recorded, Price | None, tuple[int, ...]]:
        """Price the usage, then write the ledger row, settle the hold and update health, all at once."""
        p, t = self.plan, self.target
        latency = self.elapsed_ms()
        try:
            price = p.prices.price(t.price_provider, t.model, usage)
        except UnpricedModel:
            price = None
        cost = price.total if price else None
        row = {
            **_LEDGER_DEFAULTS,
            "workspace_id": p.actor.workspace_id, "user_id": p.actor.user_id, "api_key_id": p.req.api_key_id,
            "project_id": p.req.project_id, "workflow_run_id": p.req.workflow_run_id,
            "notebook_id": p.req.notebook_id, "report_id": p.req.report_id, "tags": list(p.req.tags + extra_tags),
            "provider": t.price_provider, "model": t.model, "kind": p.req.kind, "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens, "cached_input_tokens": usage.cached_input_tokens,
            "cache_write_tokens": usage.cache_write_tokens, "images": usage.images, "characters": usage.characters,
            "seconds": usage.seconds or None, "estimated_cost": self.estimated, "cost": cost, "latency_ms": latency,
            "ttft_ms": self.ttft_ms, "status": status, "error": error, "request_id": p.request_id,
            "attempt": self.number, "connection_id": t.connection_id, "priced": price is not None,
            "price_source": price.source if price else None, "price_version": price.version if price else None,
            "created_at": utcnow(),
            **({f"cost_{c}": v for c, v in price.components().items()} if price else {}),
        }
        with db.transaction() as s:
            # Core, not the ORM's unit of work: this insert is on every call's path.
            ledger_id = s.execute(_INSERT_LEDGER, row).scalar_one()
            guards.budgets.settle(s, self.hold, cost)
            guards.plan.record(s, p.actor.workspace_id, ledger_id, cost, row["created_at"])
            if status not in ("ok", "cancelled"):
                router.forget_routing(p.actor.workspace_id)  # the next call must see this target's health
            # A stream the user stopped says nothing against the target: it was answering.
            router.record_outcome(s, t, ok=status in ("ok", "cancelled"),
                                  latency_ms=latency if status == "ok" else None, error=error, policy=p.policy)
            saved = tuple(
                assets.save(s, workspace_id=p.actor.workspace_id, data=a.data, mime=a.mime, kind=p.req.kind,
                            provider=t.price_provider, model=t.model, prompt=p.req.prompt or None,
                            ledger_id=ledger_id, project_id=p.req.project_id, user_id=p.actor.user_id).id
                for a in (result.assets if result else ())
            )
        return _Recorded(ledger_id, cost, latency), price, saved

    def failed(self, exc: ProviderError) -> None:
        """Record a failed attempt (with what it used, if the vendor billed part of it), then re-raise."""
        if not _reached_provider(exc):
            guards.budgets.release(self.hold)
            with db.transaction() as s:
                router.record_outcome(s, self.target, ok=False, latency_ms=None, error=str(exc), policy=self.plan.policy)
            router.forget_routing(self.plan.actor.workspace_id)
            return
        usage = exc.partial.usage if exc.partial is not None else Usage()
        self.record(usage, status=_status(exc), error=str(exc) or type(exc).__name__)

    def finish(self, result: Result) -> Generation:
        usage, extra = result.usage, ()
        if self.plan.req.kind == "text" and usage.input_tokens == 0 and usage.output_tokens == 0:
            # Some self-hosted servers report no usage: count it ourselves rather than record zero.
            usage = Usage(input_tokens=self.plan.prompt_tokens.tokens,
                          output_tokens=tokens.count(result.text, self.target.model))
            extra = (ESTIMATED_USAGE_TAG,)
        elif self.plan.req.kind == "video" and not usage.seconds:
            # Video is billed by the second; a vendor that does not say how long, made what was asked for.
            usage = replace(usage, seconds=_worst_case(self.plan.req, 0, 0).seconds)
            extra = (ESTIMATED_USAGE_TAG,)
        entry, price, asset_ids = self.record(usage, status="ok", error=None, extra_tags=extra, result=result)
        return Generation(
            request_id=self.plan.request_id, text=result.text, asset_ids=asset_ids, usage=usage,
            cost=price.total if price else None, estimated_cost=self.estimated, provider=self.target.price_provider,
            model=self.target.model, target=self.target.label, latency_ms=entry.latency_ms, ttft_ms=self.ttft_ms,
            attempts=self.number, ledger_id=entry.id, finish_reason=result.finish_reason,
            tool_calls=result.tool_calls,
        )


def _begin(plan: _Plan, target: router.Target, number: int, *, downgraded: bool = False) -> _Attempt:
    estimated = _estimate_price(plan.prices, target, plan.req, _reserved_tokens(plan.prompt_tokens), plan.max_tokens)
    attempt = _Attempt(plan, target, number, hold=None, estimated=estimated,
                       provider=_provider(plan.actor.workspace_id, target))
    try:
        attempt.hold = guards.budgets.reserve(attempt.ctx, estimated)
    except budgets.Downgrade as d:
        if downgraded:  # budgets that send calls round in a circle: refuse rather than loop
            raise budgets.BudgetExceeded(f"{d} That model is at a budget's limit too, so the call was not made.",
                                         d.budget_id) from None
        cheaper_plan, cheaper = _downgrade(plan, d.target)
        return _begin(cheaper_plan, cheaper, number, downgraded=True)
    attempt.started = time.perf_counter()  # latency is the vendor's time, not our set-up
    return attempt


def _downgrade(plan: _Plan, target: str) -> tuple[_Plan, router.Target]:
    """The plan and target for an attempt that a budget at its limit switches to a cheaper model."""
    with db.read_session() as s:
        cheaper = _pinned(s, plan.actor.workspace_id, plan.req.kind, target)
        prices = pricing.price_list(s, plan.actor.workspace_id, {(cheaper.price_provider, cheaper.model)})
    return replace(plan, prices=prices), cheaper


# --- the public calls -----------------------------------------------------------------------


def generate(req: GenerationRequest, actor: Actor) -> Generation:
    """Run one call to completion through the route, and return what it made and cost."""
    plan = _plan(req, actor)

    def attempt(target: router.Target, number: int) -> Generation:
        a = _begin(plan, target, number)
        try:
            result = a.provider.generate(
                _provider_request(plan.req, a.target.model, plan.max_tokens, plan.request_id))
        except ProviderError as exc:
            a.failed(exc)
            raise
        except BaseException:
            guards.budgets.release(a.hold)
            raise
        return a.finish(result)

    return router.Router(plan.policy, plan.health).run(plan.targets, attempt, tokens=plan.prompt_tokens.tokens,
                                                       skipped=plan.skipped)


class GenerationStream:
    """Text as it arrives; ``result`` once the stream has ended.

    Falling back to another target is possible only until the first piece of text has been
    shown. A stream that breaks later is recorded with what it used and raised; one the caller
    abandons (``close``, or leaving the loop) is recorded as cancelled at what it really used:
    the prompt, and the text received so far counted with the tokenizer.
    """

    def __init__(self, plan: _Plan):
        self._plan = plan
        self._attempt: _Attempt | None = None
        self._items: Iterator[Chunk | Result] | None = None
        self._first: Chunk | Result | None = None
        self._text: list[str] = []
        self._done = False
        self.result: Generation | None = None

    def _open(self) -> None:
        plan = self._plan

        def attempt(target: router.Target, number: int) -> None:
            a = _begin(plan, target, number)
            try:
                items = a.provider.stream(
                    _provider_request(plan.req, a.target.model, plan.max_tokens, plan.request_id))
                first = next(items)
            except StopIteration:
                a.failed(TruncatedStream(f"{target.label} ended the stream before sending anything"))
                raise TruncatedStream(f"{target.label} ended the stream before sending anything") from None
            except ProviderError as exc:
                a.failed(exc)
                raise
            except BaseException:
                guards.budgets.release(a.hold)
                raise
            a.ttft_ms = a.elapsed_ms()
            self._attempt, self._items, self._first = a, items, first

        router.Router(plan.policy, plan.health).run(plan.targets, attempt, tokens=plan.prompt_tokens.tokens,
                                                    skipped=plan.skipped)

    def __iter__(self) -> Iterator[str]:
        if self._done:
            return
        if self._attempt is None:
            self._open()
        assert self._attempt is not None and self._items is not None
        try:
            item = self._first
            while True:
                if isinstance(item, Result):
                    self.result = self._attempt.finish(item)
                    self._done = True
                    return
                if item.text:
                    self._text.append(item.text)
                    yield item.text
                item = next(self._items)
        except StopIteration:
            self._fail(TruncatedStream(f"{self._attempt.target.label} ended the stream without finishing"))
        except ProviderError as exc:
            self._fail(exc)
        except GeneratorExit:
            self._cancel()
            raise

    def _used(self) -> Usage:
        text = "".join(self._text)
        return Usage(input_tokens=self._plan.prompt_tokens.tokens,
                     output_tokens=tokens.count(text, self._attempt.target.model) if text else 0)

    def _fail(self, exc: ProviderError) -> None:
        self._done = True
        partial = exc.partial.usage if exc.partial is not None and exc.partial.usage != Usage() else self._used()
        self._attempt.record(partial, status=_status(exc), error=str(exc) or type(exc).__name__)
        raise router.NoRoute(f"The answer from {self._attempt.target.label} broke off: {exc}",
                             [(self._attempt.target.label, str(exc))], exc) from exc

    def _cancel(self) -> None:
        if self._done or self._attempt is None:
            return
        self._done = True
        close = getattr(self._items, "close", None)
        if close:
            close()
        self._attempt.record(self._used(), status="cancelled", error="stopped by the user")

    def close(self) -> None:
        """Stop early: the provider stream is closed and what was used so far is recorded."""
        self._cancel()


def stream(req: GenerationRequest, actor: Actor) -> GenerationStream:
    """A text call whose answer arrives piece by piece; iterate it, then read ``.result``."""
    if req.kind != "text":
        raise InvalidInput("Only text answers can be streamed; run media calls with generate().")
    if req.tools:
        raise InvalidInput("Calls that offer tools are run with generate(), not streamed.")
    return GenerationStream(_plan(req, actor))

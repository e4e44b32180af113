"""Which provider/model a call goes to, and what happens when it fails.

Per workspace and kind, ``route_targets`` is an ordered list of connection/model targets and
``route_policies`` says how to use it: the strategy (priority order, lowest cost, lowest
latency), retries per target and a cap on attempts across retries and fallbacks together.

``Router.run`` drives one call through that list. Retryable failures (rate limits,
unavailable, timeouts, cut-off streams) are retried on the same target with exponential
backoff and full jitter, never sooner than the vendor's Retry-After; failures another
target might not have move on to the next target; a prompt too long for a model moves on
only to targets with a larger context window. A circuit breaker per target (kept in
``target_health``, so every process and the UI see it) skips a target after repeated
failures and lets one probe through after a cool-down. Requests- and tokens-per-minute
limits are counted in this process: a sidecar and a UI process each keep their own window.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from sqlalchemy import Integer, bindparam, case, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from engine.dbtypes import UTCDateTime, utcnow
from engine.errors import MeterbookError
from engine.models import ProviderConnection, RoutePolicy, RouteTarget, TargetHealth
from providers.base import ContextTooLong, ProviderError, RateLimited

T = TypeVar("T")
STRATEGIES = ("priority", "cost", "latency")


@dataclass(frozen=True)
class Target:
    connection_id: int
    connection_name: str
    provider_type: str
    price_provider: str  # the catalog provider id its calls are priced and recorded under
    model: str
    context_window: int | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    version: str = ""  # changes when the connection is edited, so cached clients are rebuilt

    @property
    def key(self) -> tuple[int, str]:
        return (self.connection_id, self.model)

    @property
    def label(self) -> str:
        return f"{self.connection_name}/{self.model}"


@dataclass(frozen=True)
class Policy:
    strategy: str = "priority"
    max_attempts: int = 4
    retries_per_target: int = 2
    breaker_threshold: int = 5  # consecutive failures that open the circuit
    breaker_cooldown: timedelta = timedelta(seconds=30)
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    max_wait: float = 20.0  # a Retry-After longer than this moves on instead of waiting


@dataclass(frozen=True)
class HealthView:
    state: str
    consecutive_failures: int
    opened_at: datetime | None
    latency_ms: int | None
    last_error: str | None = None
    last_ok_at: datetime | None = None
    last_failure_at: datetime | None = None


class NoRoute(MeterbookError):
    """No target could take the call; ``failures`` lists what each attempt or skip said."""

    def __init__(self, message: str, failures: list[tuple[str, str]], last: ProviderError | None = None):
        super().__init__(message)
        self.failures = failures
        self.last = last


# --- loading the plan -----------------------------------------------------------------------


def load_policy(session: Session, workspace_id: int, kind: str) -> Policy:
    row = session.scalar(select(RoutePolicy).where(RoutePolicy.workspace_id == workspace_id, RoutePolicy.kind == kind))
    if row is None:
        return Policy()
    return Policy(strategy=row.strategy, max_attempts=row.max_attempts, retries_per_target=row.retries_per_target)


def load_targets(session: Session, workspace_id: int, kind: str) -> list[Target]:
    rows = session.execute(
        select(RouteTarget, ProviderConnection)
        .join(ProviderConnection, ProviderConnection.id == RouteTarget.connection_id)
        .where(
            RouteTarget.workspace_id == workspace_id,
            RouteTarget.kind == kind,
            RouteTarget.enabled.is_(True),
            ProviderConnection.enabled.is_(True),
        )
        .order_by(RouteTarget.position, RouteTarget.id)
    ).all()
    return [target_for(c, t.model, t) for t, c in rows]


def target_for(connection: ProviderConnection, model: str, route: RouteTarget | None = None) -> Target:
    return Target(
        connection_id=connection.id,
        connection_name=connection.name,
        provider_type=connection.provider_type,
        price_provider=connection.price_provider or connection.provider_type,
        model=model,
        context_window=route.context_window if route else None,
        rpm_limit=route.rpm_limit if route else None,
        tpm_limit=route.tpm_limit if route else None,
        version=connection.updated_at.isoformat(),
    )


def load_health(session: Session, targets: Iterable[Target]) -> dict[tuple[int, str], HealthView]:
    ids = {t.connection_id for t in targets}
    if not ids:
        return {}
    rows = session.scalars(select(TargetHealth).where(TargetHealth.connection_id.in_(ids))).all()
    return {
        (h.connection_id, h.model): HealthView(
            h.state, h.consecutive_failures, h.opened_at, h.latency_ms, h.last_error, h.last_ok_at, h.last_failure_at
        )
        for h in rows
    }


@dataclass(frozen=True)
class Routing:
    """Everything a call's plan reads about a workspace's routes: a second's worth can be reused."""

    policy: Policy
    targets: list[Target]  # a pinned target first, then the route's
    pinned: Target | None
    health: dict[tuple[int, str], HealthView]
    prices: object  # engine.pricing.PriceList, typed loosely: pricing sits beside, not below, the router


ROUTING_TTL = 1.0  # seconds; edits made through routes/connections in this process clear it at once
_routings: dict[tuple, tuple[float, Routing]] = {}
_routings_lock = threading.Lock()


def cached_routing(key: tuple, load: Callable[[], Routing]) -> Routing:
    """``load()`` at most once a second per key (workspace id first), so the hot path skips four queries."""
    now = time.monotonic()
    hit = _routings.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    routing = load()
    with _routings_lock:
        _routings[key] = (now + ROUTING_TTL, routing)
    return routing


def forget_routing(workspace_id: int | None = None) -> None:
    """Drop what this process remembers of a workspace's routes (all workspaces when None)."""
    with _routings_lock:
        for key in [k for k in _routings if workspace_id is None or k[0] == workspace_id]:
            _routings.pop(key, None)


def order(
    targets: list[Target],
    policy: Policy,
    health: dict[tuple[int, str], HealthView],
    cost_of: Callable[[Target], Decimal | None] | None = None,
    pinned: Target | None = None,
) -> list[Target]:
    """Targets in the order to try them; a target the caller chose goes first whatever the strategy."""
    rest = [t for t in targets if pinned is None or t.key != pinned.key]
    if policy.strategy == "cost" and cost_of is not None:
        costs = {t.key: cost_of(t) for t in rest}
        rest.sort(key=lambda t: (costs[t.key] is None, costs[t.key] or 0))  # unpriced last
    elif policy.strategy == "latency":
        rest.sort(key=lambda t: (health.get(t.key) is None or health[t.key].latency_ms is None,
                                 (health.get(t.key) and health[t.key].latency_ms) or 0))
    return ([pinned] if pinned else []) + rest


# --- health and the circuit breaker ---------------------------------------------------------


def breaker_allows(h: HealthView | None, policy: Policy, now: datetime) -> bool:
    """Closed: yes. Open: only once the cool-down has passed (the half-open probe)."""
    if h is None or h.state != "open":
        return True
    return h.opened_at is None or now - h.opened_at >= policy.breaker_cooldown


def record_outcome(
    session: Session,
    target: Target,
    *,
    ok: bool,
    latency_ms: int | None,
    error: str | None,
    policy: Policy,
    now: datetime | None = None,
) -> None:
    """Update the target's health in the caller's transaction (the one writing the ledger row)."""
    now = now or utcnow()
    h = TargetHealth
    where = (h.connection_id == target.connection_id) & (h.model == target.model)
    if ok:
        done = session.execute(_HEALTHY, {"cid": target.connection_id, "target_model": target.model, "now": now,
                                          "latency": latency_ms})
        if done.rowcount:
            return
    _ensure_row(session, target, now)
    if ok:
        record_outcome(session, target, ok=ok, latency_ms=latency_ms, error=error, policy=policy, now=now)
        return
    row = session.execute(select(h.consecutive_failures, h.state).where(where).with_for_update()).one()
    failures = row.consecutive_failures + 1
    opens = row.state == "open" or failures >= policy.breaker_threshold
    session.execute(update(h).where(where).values(
        consecutive_failures=failures, calls=h.calls + 1, failures=h.failures + 1, last_failure_at=now,
        last_error=(error or "")[:2000], state="open" if opens else "closed",
        opened_at=now if opens else None, updated_at=now))


def _healthy_statement():
    """Built once: every successful call runs it, and building a statement costs more than running it."""
    h = TargetHealth.__table__.c  # Core: the ORM's session synchronisation is not needed here
    latency = bindparam("latency", type_=Integer())
    return (
        update(TargetHealth.__table__)
        .where(h.connection_id == bindparam("cid"), h.model == bindparam("target_model"))
        .values(
            state="closed", consecutive_failures=0, opened_at=None, calls=h.calls + 1,
            last_ok_at=bindparam("now", type_=UTCDateTime()), updated_at=bindparam("now", type_=UTCDateTime()),
            # A moving average that follows recent behaviour without one slow call dominating it.
            latency_ms=case((latency.is_(None), h.latency_ms), (h.latency_ms.is_(None), latency),
                            else_=(h.latency_ms * 4 + latency) / 5),
        )
    )


_HEALTHY = _healthy_statement()


def _ensure_row(session: Session, target: Target, now: datetime) -> None:
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(TargetHealth)
        .values(connection_id=target.connection_id, model=target.model, state="closed", consecutive_failures=0,
                calls=0, failures=0, updated_at=now)
        .on_conflict_do_nothing(index_elements=["connection_id", "model"])
    )


# --- per-process rate limits ----------------------------------------------------------------


class RateLimiter:
    """Sliding one-minute windows of requests and tokens per target, in this process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._windows: dict[tuple[int, str], deque[tuple[float, int]]] = {}
        self._lock = threading.Lock()

    def acquire(self, target: Target, tokens: int) -> float:
        """0 if the call may go now (and it is counted); else seconds until it could."""
        if target.rpm_limit is None and target.tpm_limit is None:
            return 0.0
        now = self._clock()
        with self._lock:
            window = self._windows.setdefault(target.key, deque())
            while window and now - window[0][0] >= 60:
                window.popleft()
            if target.rpm_limit is not None and len(window) >= target.rpm_limit:
                return 60 - (now - window[0][0])
            if target.tpm_limit is not None and window and sum(n for _, n in window) + tokens > target.tpm_limit:
                return 60 - (now - window[0][0])
            window.append((now, tokens))
            return 0.0


LIMITER = RateLimiter()


# --- driving one call -----------------------------------------------------------------------


@dataclass
class Router:
    policy: Policy
    health: dict[tuple[int, str], HealthView] = field(default_factory=dict)
    limiter: RateLimiter = LIMITER
    sleep: Callable[[float], None] = time.sleep
    jitter: Callable[[], float] = random.random
    now: Callable[[], datetime] = utcnow

    def backoff(self, retry: int, retry_after: float | None) -> float:
        delay = self.jitter() * min(self.policy.backoff_cap, self.policy.backoff_base * 2**retry)
        return max(delay, retry_after or 0.0)

    def run(self, targets: list[Target], attempt: Callable[[Target, int], T], *, tokens: int = 0,
            skipped: Iterable[tuple[str, str]] = ()) -> T:
        """Call ``attempt(target, n)`` until one succeeds; it raises ``ProviderError`` to fail.

        ``skipped`` names targets the caller left out beforehand, with why, for the message if all fail.
        """
        failures: list[tuple[str, str]] = []
        left_out = list(skipped)
        last: ProviderError | None = None
        made = 0
        too_long_at: int | None = None  # the context window a prompt did not fit
        for target in targets:
            if too_long_at is not None and (target.context_window or 0) <= too_long_at:
                failures.append((target.label, "its context window is no larger"))
                continue
            if not breaker_allows(self.health.get(target.key), self.policy, self.now()):
                failures.append((target.label, "paused after repeated failures (circuit open)"))
                continue
            for retry in range(self.policy.retries_per_target + 1):
                if made >= self.policy.max_attempts:
                    failures.append((target.label, "not tried: the attempt limit was reached"))
                    raise self._give_up(failures + left_out, last)
                wait = self.limiter.acquire(target, tokens)
                if wait > 0:
                    failures.append((target.label, f"its rate limit is full for {wait:.0f} s"))
                    last = last or RateLimited(f"{target.label} is at its rate limit", retry_after=wait)
                    break
                made += 1
                try:
                    return attempt(target, made)
                except ProviderError as exc:
                    last = exc
                    failures.append((target.label, str(exc) or type(exc).__name__))
                    if isinstance(exc, ContextTooLong):
                        too_long_at = target.context_window or 0
                        break
                    wait = self.backoff(retry, exc.retry_after)
                    if exc.retryable and retry < self.policy.retries_per_target and wait <= self.policy.max_wait:
                        self.sleep(wait)
                        continue
                    if exc.fallback:
                        break
                    raise self._give_up(failures + left_out, last) from exc
        raise self._give_up(failures + left_out, last)

    @staticmethod
    def _give_up(failures: list[tuple[str, str]], last: ProviderError | None) -> NoRoute:
        if not failures:
            return NoRoute("No model is set up for this kind of call. Add one under Providers.", failures, last)
        tried = "; ".join(f"{label}: {why}" for label, why in failures)
        return NoRoute(f"The call did not succeed. {tried}", failures, last)

"""Managing a workspace's routes: which connection/model targets each kind of call may use, in what order.

The router reads these tables on every call; this module is how the Providers page changes
them, with the permission check, validation and audit trail every write gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine import audit, db
from engine.errors import Conflict, InvalidInput, NotFound
from engine.models import ProviderConnection, RoutePolicy, RouteTarget, TargetHealth
from engine.permissions import Actor, authorize
from engine.router import STRATEGIES, Policy, forget_routing
from providers.base import KINDS


@dataclass(frozen=True)
class TargetView:
    id: int
    kind: str
    position: int
    connection_id: int
    connection_name: str
    model: str
    context_window: int | None
    rpm_limit: int | None
    tpm_limit: int | None
    enabled: bool
    state: str  # closed (healthy), open (paused after failures), or unknown (never called)
    consecutive_failures: int
    latency_ms: int | None
    last_error: str | None
    last_ok_at: datetime | None

    @property
    def label(self) -> str:
        return f"{self.connection_name}/{self.model}"


@dataclass(frozen=True)
class RouteView:
    kind: str
    strategy: str
    max_attempts: int
    retries_per_target: int
    targets: list[TargetView]


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise InvalidInput(f"Unknown kind {kind!r}; choose one of {', '.join(KINDS)}.")
    return kind


def _limit(value, label: str, *, low: int = 1, high: int = 100_000_000) -> int | None:
    if value in (None, ""):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{label} must be a whole number.") from None
    if not low <= n <= high:
        raise InvalidInput(f"{label} must be between {low:,} and {high:,}.")
    return n


def get_route(actor: Actor, kind: str) -> RouteView:
    kind = _kind(kind)
    with db.read_session() as s:
        authorize(s, actor, "workspace.read")
        policy = s.scalar(select(RoutePolicy).where(RoutePolicy.workspace_id == actor.workspace_id,
                                                   RoutePolicy.kind == kind))
        rows = s.execute(
            select(RouteTarget, ProviderConnection.name, TargetHealth)
            .join(ProviderConnection, ProviderConnection.id == RouteTarget.connection_id)
            .outerjoin(TargetHealth, (TargetHealth.connection_id == RouteTarget.connection_id)
                       & (TargetHealth.model == RouteTarget.model))
            .where(RouteTarget.workspace_id == actor.workspace_id, RouteTarget.kind == kind)
            .order_by(RouteTarget.position, RouteTarget.id)
        ).all()
    default = Policy()
    return RouteView(
        kind,
        policy.strategy if policy else default.strategy,
        policy.max_attempts if policy else default.max_attempts,
        policy.retries_per_target if policy else default.retries_per_target,
        [
            TargetView(t.id, t.kind, t.position, t.connection_id, name, t.model, t.context_window, t.rpm_limit,
                       t.tpm_limit, t.enabled, h.state if h else "unknown", h.consecutive_failures if h else 0,
                       h.latency_ms if h else None, h.last_error if h else None, h.last_ok_at if h else None)
            for t, name, h in rows
        ],
    )


def set_policy(actor: Actor, kind: str, *, strategy: str, max_attempts, retries_per_target) -> None:
    kind = _kind(kind)
    if strategy not in STRATEGIES:
        raise InvalidInput(f"Choose a strategy among {', '.join(STRATEGIES)}.")
    attempts = _limit(max_attempts, "Attempts in all", high=20)
    retries = _limit(retries_per_target, "Retries per model", low=0, high=10)
    if attempts is None or retries is None:
        raise InvalidInput("Give both the number of attempts and the retries per model.")
    with db.transaction() as s:
        authorize(s, actor, "route.write")
        policy = s.scalar(select(RoutePolicy).where(RoutePolicy.workspace_id == actor.workspace_id,
                                                   RoutePolicy.kind == kind))
        if policy is None:
            policy = RoutePolicy(workspace_id=actor.workspace_id, kind=kind)
            s.add(policy)
        policy.strategy, policy.max_attempts, policy.retries_per_target = strategy, attempts, retries
        s.flush()
        forget_routing(actor.workspace_id)
        audit.record_for(s, actor, "route.policy_set", "route_policy", policy.id, kind=kind, strategy=strategy,
                         max_attempts=attempts, retries_per_target=retries)


def _connection(s: Session, actor: Actor, connection_id: int) -> ProviderConnection:
    c = s.get(ProviderConnection, connection_id)
    if c is None or c.workspace_id != actor.workspace_id:
        raise NotFound("That provider connection does not exist in this workspace.")
    return c


def _target(s: Session, actor: Actor, target_id: int) -> RouteTarget:
    t = s.get(RouteTarget, target_id)
    if t is None or t.workspace_id != actor.workspace_id:
        raise NotFound("That model is not in this workspace's routes.")
    return t


def add_target(actor: Actor, kind: str, *, connection_id: int, model: str, context_window=None,
               rpm_limit=None, tpm_limit=None) -> int:
    """Append a target to the end of the kind's route; returns its id."""
    kind, model = _kind(kind), (model or "").strip()
    if not model or len(model) > 200:
        raise InvalidInput("Give the model's id (at most 200 characters), like gpt-4o-mini.")
    window = _limit(context_window, "Context window", high=100_000_000)
    rpm, tpm = _limit(rpm_limit, "Requests per minute"), _limit(tpm_limit, "Tokens per minute")
    with db.transaction() as s:
        authorize(s, actor, "route.write")
        c = _connection(s, actor, connection_id)
        if s.scalar(select(RouteTarget.id).where(RouteTarget.workspace_id == actor.workspace_id,
                                                 RouteTarget.kind == kind, RouteTarget.connection_id == c.id,
                                                 RouteTarget.model == model)):
            raise Conflict(f"{c.name}/{model} is already in the {kind} route.")
        last = s.scalar(select(func.max(RouteTarget.position)).where(
            RouteTarget.workspace_id == actor.workspace_id, RouteTarget.kind == kind))
        t = RouteTarget(workspace_id=actor.workspace_id, kind=kind, position=(last or 0) + 1, connection_id=c.id,
                        model=model, context_window=window, rpm_limit=rpm, tpm_limit=tpm)
        s.add(t)
        s.flush()
        forget_routing(actor.workspace_id)
        audit.record_for(s, actor, "route.target_added", "route_target", t.id, kind=kind, target=f"{c.name}/{model}")
        return t.id


def update_target(actor: Actor, target_id: int, *, context_window=None, rpm_limit=None, tpm_limit=None,
                  enabled: bool = True) -> None:
    window = _limit(context_window, "Context window", high=100_000_000)
    rpm, tpm = _limit(rpm_limit, "Requests per minute"), _limit(tpm_limit, "Tokens per minute")
    with db.transaction() as s:
        authorize(s, actor, "route.write")
        t = _target(s, actor, target_id)
        t.context_window, t.rpm_limit, t.tpm_limit, t.enabled = window, rpm, tpm, bool(enabled)
        forget_routing(actor.workspace_id)
        audit.record_for(s, actor, "route.target_updated", "route_target", t.id, enabled=bool(enabled))


def move_target(actor: Actor, target_id: int, step: int) -> None:
    """Move a target ``step`` places earlier (negative) or later (positive) in its route."""
    with db.transaction() as s:
        authorize(s, actor, "route.write")
        t = _target(s, actor, target_id)
        ordered = list(s.scalars(select(RouteTarget).where(
            RouteTarget.workspace_id == actor.workspace_id, RouteTarget.kind == t.kind
        ).order_by(RouteTarget.position, RouteTarget.id)))
        i = ordered.index(t)
        j = max(0, min(len(ordered) - 1, i + step))
        ordered.insert(j, ordered.pop(i))
        for position, target in enumerate(ordered, start=1):
            target.position = position
        forget_routing(actor.workspace_id)
        audit.record_for(s, actor, "route.target_moved", "route_target", t.id, position=j + 1)


def remove_target(actor: Actor, target_id: int) -> None:
    with db.transaction() as s:
        authorize(s, actor, "route.write")
        t = _target(s, actor, target_id)
        forget_routing(actor.workspace_id)
        audit.record_for(s, actor, "route.target_removed", "route_target", t.id, kind=t.kind, model=t.model)
        s.delete(t)


def choices(actor: Actor, kind: str) -> list[str]:
    """The "connection/model" targets a caller may pick for this kind, in route order."""
    return [t.label for t in get_route(actor, kind).targets if t.enabled]

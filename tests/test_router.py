"""The router: fallback order, retries and backoff, the attempt cap, the circuit breaker and rate limits."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from engine import db, router
from engine.dbtypes import utcnow
from engine.models import ProviderConnection
from providers.base import AuthError, BadRequest, ContextTooLong, RateLimited, Timeout, Unavailable
from tests.factories import owner

A = router.Target(1, "openai", "openai", "openai", "gpt-4o-mini", context_window=128_000)
B = router.Target(2, "anthropic", "anthropic", "anthropic", "claude-haiku-4-5", context_window=200_000)
C = router.Target(3, "groq", "openai-compatible", "groq", "llama-3.1-8b-instant", context_window=8_000)


class Script:
    """An attempt function that fails or succeeds per target as told, and remembers the calls."""

    def __init__(self, **outcomes):
        self.outcomes = {k: list(v) for k, v in outcomes.items()}
        self.calls: list[str] = []

    def __call__(self, target: router.Target, number: int) -> str:
        self.calls.append(target.connection_name)
        queue = self.outcomes.get(target.connection_name) or ["ok"]
        outcome = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(outcome, Exception):
            raise outcome
        return f"{target.label}#{number}"


def make(policy=None, **kw) -> tuple[router.Router, list[float]]:
    slept: list[float] = []
    r = router.Router(policy or router.Policy(), limiter=router.RateLimiter(), sleep=slept.append,
                      jitter=lambda: 1.0, **kw)
    return r, slept


def test_first_target_answers_without_touching_the_others():
    r, slept = make()
    script = Script()
    assert r.run([A, B], script) == "openai/gpt-4o-mini#1"
    assert script.calls == ["openai"] and slept == []


def test_retryable_errors_retry_with_exponential_backoff_then_fall_back():
    r, slept = make(router.Policy(retries_per_target=2, max_attempts=10))
    script = Script(openai=[Unavailable("503")] * 3)
    assert r.run([A, B], script) == "anthropic/claude-haiku-4-5#4"
    assert script.calls == ["openai", "openai", "openai", "anthropic"]
    assert slept == [0.5, 1.0]  # base × 2^retry with jitter 1.0; no sleep before falling back


def test_retry_after_is_honoured_and_a_long_one_moves_on_instead_of_waiting():
    r, slept = make(router.Policy(max_wait=20))
    script = Script(openai=[RateLimited("slow down", retry_after=7), "ok"])
    assert r.run([A, B], script).startswith("openai/")
    assert slept == [7]
    r, slept = make(router.Policy(max_wait=20))
    script = Script(openai=[RateLimited("come back in an hour", retry_after=3600)])
    assert r.run([A, B], script).startswith("anthropic/")
    assert slept == []


def test_jitter_spreads_the_backoff_below_its_cap():
    r = router.Router(router.Policy(backoff_base=0.5, backoff_cap=8), jitter=lambda: 0.25)
    assert [r.backoff(n, None) for n in range(6)] == [0.125, 0.25, 0.5, 1.0, 2.0, 2.0]


def test_a_bad_request_fails_at_once_without_fallback():
    r, _ = make()
    script = Script(openai=[BadRequest("temperature must be at most 2")])
    with pytest.raises(router.NoRoute, match="temperature must be at most 2"):
        r.run([A, B], script)
    assert script.calls == ["openai"]


def test_auth_errors_fall_back_without_retrying():
    r, slept = make()
    script = Script(openai=[AuthError("invalid key")])
    assert r.run([A, B], script).startswith("anthropic/")
    assert script.calls == ["openai", "anthropic"] and slept == []


def test_context_too_long_moves_only_to_a_larger_context_window():
    r, _ = make()
    script = Script(openai=[ContextTooLong("too long")])
    # C's window (8k) is smaller than A's, so it is skipped; B (200k) takes it.
    assert r.run([A, C, B], script).startswith("anthropic/")
    assert script.calls == ["openai", "anthropic"]


def test_the_attempt_cap_counts_retries_and_fallbacks_together():
    r, _ = make(router.Policy(retries_per_target=2, max_attempts=4))
    script = Script(openai=[Timeout("t")] * 5, anthropic=[Timeout("t")] * 5, groq=[Timeout("t")] * 5)
    with pytest.raises(router.NoRoute) as caught:
        r.run([A, B, C], script)
    assert len(script.calls) == 4
    assert "attempt limit" in str(caught.value)


def test_open_circuit_is_skipped_until_the_cool_down_then_probed():
    now = utcnow()
    policy = router.Policy(breaker_cooldown=timedelta(seconds=30))
    opened = router.HealthView("open", 5, now - timedelta(seconds=10), None)
    r, _ = make(policy, health={A.key: opened}, now=lambda: now)
    script = Script()
    assert r.run([A, B], script).startswith("anthropic/")
    assert script.calls == ["anthropic"]
    r, _ = make(policy, health={A.key: opened}, now=lambda: now + timedelta(seconds=25))
    assert r.run([A, B], Script()).startswith("openai/")  # cool-down passed: the half-open probe


def test_every_target_failing_names_each_reason():
    r, _ = make(router.Policy(retries_per_target=0))
    script = Script(openai=[AuthError("key revoked")], anthropic=[Unavailable("overloaded")])
    with pytest.raises(router.NoRoute) as caught:
        r.run([A, B], script)
    message = str(caught.value)
    assert "openai/gpt-4o-mini: key revoked" in message and "anthropic/claude-haiku-4-5: overloaded" in message


def test_requests_per_minute_limit_sends_the_overflow_elsewhere():
    clock = [0.0]
    limiter = router.RateLimiter(clock=lambda: clock[0])
    limited = router.Target(1, "openai", "openai", "openai", "gpt-4o-mini", rpm_limit=2)
    r = router.Router(router.Policy(), limiter=limiter, sleep=lambda s: None)
    used = [r.run([limited, B], Script()).split("/")[0] for _ in range(3)]
    assert used == ["openai", "openai", "anthropic"]
    clock[0] = 61.0  # the window has moved on
    assert r.run([limited, B], Script()).startswith("openai/")


def test_tokens_per_minute_limit():
    limiter = router.RateLimiter(clock=lambda: 0.0)
    t = router.Target(1, "openai", "openai", "openai", "gpt-4o-mini", tpm_limit=1000)
    assert limiter.acquire(t, 600) == 0
    assert limiter.acquire(t, 600) > 0  # would pass 1000 tokens this minute
    assert limiter.acquire(t, 300) == 0


def test_strategies_order_targets():
    health = {A.key: router.HealthView("closed", 0, None, 900), B.key: router.HealthView("closed", 0, None, 300)}
    costs = {A.key: Decimal("0.02"), B.key: Decimal("0.01"), C.key: None}
    by = router.order
    assert by([A, B, C], router.Policy(strategy="priority"), health) == [A, B, C]
    assert by([A, B, C], router.Policy(strategy="cost"), health, lambda t: costs[t.key]) == [B, A, C]
    assert by([A, B, C], router.Policy(strategy="latency"), health) == [B, A, C]  # unknown latency last
    assert by([A, B, C], router.Policy(strategy="cost"), health, lambda t: costs[t.key], pinned=C) == [C, B, A]


def _connection(actor) -> router.Target:
    with db.transaction() as s:
        c = ProviderConnection(workspace_id=actor.workspace_id, name="openai", provider_type="openai")
        s.add(c)
        s.flush()
        return router.target_for(c, "gpt-4o-mini")


def _health(target) -> router.HealthView:
    with db.read_session() as s:
        return router.load_health(s, [target])[target.key]


def test_breaker_opens_after_consecutive_failures_and_closes_on_success(database):
    target = _connection(owner())
    policy = router.Policy(breaker_threshold=3)
    for n in range(3):
        with db.transaction() as s:
            router.record_outcome(s, target, ok=False, latency_ms=None, error=f"503 #{n}", policy=policy)
        assert _health(target).state == ("open" if n == 2 else "closed")
    h = _health(target)
    assert h.consecutive_failures == 3 and h.last_error == "503 #2" and h.opened_at is not None
    with db.transaction() as s:
        router.record_outcome(s, target, ok=True, latency_ms=400, error=None, policy=policy)
    with db.transaction() as s:
        router.record_outcome(s, target, ok=True, latency_ms=900, error=None, policy=policy)
    h = _health(target)
    assert (h.state, h.consecutive_failures, h.opened_at) == ("closed", 0, None)
    assert h.latency_ms == 500  # (400·4 + 900) / 5


def test_a_failed_half_open_probe_reopens_the_circuit(database):
    target = _connection(owner())
    policy = router.Policy(breaker_threshold=1)
    with db.transaction() as s:
        router.record_outcome(s, target, ok=False, latency_ms=None, error="down", policy=policy)
    first = _health(target).opened_at
    with db.transaction() as s:
        router.record_outcome(s, target, ok=False, latency_ms=None, error="still down", policy=policy)
    h = _health(target)
    assert h.state == "open" and h.opened_at >= first and h.consecutive_failures == 2

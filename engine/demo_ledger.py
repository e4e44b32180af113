"""The demo workspace's usage ledger: a pure function of a seed, a time window and the ids it is given.

Rows are numpy columns, priced in one vectorised pass with the catalog's own per-token rates
(``pricing.catalog_rates``) in exact integer arithmetic that mirrors ``Rates.price``: a
million ORM objects, or a million Decimals, would take minutes. ``Ledger.check_prices``
compares a sample of rows with ``pricing.catalog_price`` itself, so the shortcut cannot drift
from the engine's pricing unnoticed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np

from engine.dbtypes import MONEY_PLACES
from engine.pricing import Usage, catalog_price, catalog_rates

ROWS_PER_DAY = 560  # five people and two features in production: ~50k rows a quarter
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Workload:
    """One kind of work the demo team does, charged to one project."""

    key: str
    project: int | None  # index into the projects passed to ``generate``; None = not charged to one
    tags: tuple[str, ...]
    share: float  # relative volume on an ordinary weekday at the end of the window
    models: tuple[tuple[str, str, float, float], ...]  # provider, model, weight, trend (+ = gaining use)
    tokens_in: tuple[float, float, int, int]  # median, log-sigma, min, max
    tokens_out: tuple[float, float, int, int]
    max_tokens: int  # what the caller asks for; the estimate assumes all of it is used
    people: tuple[float, ...]  # who makes the calls: owner, admin, editor, editor, viewer
    cache: float = 0.0  # share of calls that reuse a cached prompt prefix
    hours: str = "office"
    weekend: float = 0.2
    growth: float = 0.3  # log growth over the window
    start: float = 0.0  # share of the window that passed before the project went live
    kind: str = "text"


WORKLOADS = (
    Workload("support", 0, ("support",), 0.30,
             (("openai", "gpt-4o-mini", 0.45, 0.0), ("openai", "gpt-4.1-mini", 0.25, 0.5),
              ("anthropic", "claude-3-5-haiku-latest", 0.15, -2.0), ("anthropic", "claude-haiku-4-5", 0.15, 2.5)),
             (1800, 0.45, 300, 9000), (320, 0.5, 20, 1500), 1024, (0.10, 0.15, 0.55, 0.19, 0.01),
             cache=0.7, weekend=0.35, growth=0.35),
    Workload("catalog", 1, ("extraction",), 0.22,
             (("gemini", "gemini-2.5-flash", 0.4, 0.0), ("openai", "gpt-4.1-nano", 0.25, 0.0),
              ("deepseek", "deepseek-chat", 0.2, 0.0), ("groq", "llama-3.1-8b-instant", 0.15, 0.0)),
             (900, 0.5, 150, 6000), (180, 0.6, 10, 1200), 512, (0.05, 0.05, 0.15, 0.75, 0.0),
             cache=0.3, hours="batch", weekend=0.8, growth=0.2),
    Workload("images", 1, ("images",), 0.006, (("openai", "gpt-image-1", 1.0, 0.0),),
             (80, 0.4, 20, 400), (0, 0, 0, 0), 4160, (0.1, 0.1, 0.2, 0.6, 0.0), kind="image"),
    Workload("clinical", 2, ("summarisation",), 0.12,
             (("anthropic", "claude-3-7-sonnet-latest", 0.3, -3.0), ("anthropic", "claude-sonnet-4-0", 0.4, 2.0),
              ("openai", "gpt-4.1", 0.2, 0.0), ("gemini", "gemini-2.5-flash", 0.1, 0.0)),
             (9000, 0.8, 1500, 50000), (700, 0.5, 100, 4000), 4096, (0.15, 0.45, 0.1, 0.29, 0.01),
             cache=0.4, weekend=0.1, growth=0.8, start=0.3),
    Workload("research", 3, ("research",), 0.14,
             (("openai", "o3-mini", 0.25, 0.0), ("openai", "gpt-4.1", 0.25, 1.0), ("openai", "gpt-4o", 0.15, -1.5),
              ("anthropic", "claude-sonnet-4-0", 0.2, 0.0), ("mistral", "mistral-large-latest", 0.15, 0.0)),
             (3500, 0.7, 300, 30000), (900, 0.6, 80, 6000), 8192, (0.35, 0.25, 0.2, 0.18, 0.02),
             cache=0.3, weekend=0.15),
    Workload("earnings", 4, ("summarisation", "finance"), 0.05,
             (("openai", "gpt-4o", 0.4, 0.0), ("anthropic", "claude-3-7-sonnet-latest", 0.3, 0.0),
              ("gemini", "gemini-2.5-flash", 0.3, 0.0)),
             (14000, 0.6, 3000, 50000), (1200, 0.4, 200, 4000), 4096, (0.3, 0.3, 0.2, 0.2, 0.0),
             cache=0.2, weekend=0.05, growth=0.0),
    Workload("internal", 5, ("internal", "code"), 0.10,
             (("mistral", "codestral-latest", 0.3, 0.0), ("openai", "gpt-4.1-mini", 0.25, 0.0),
              ("groq", "llama-3.3-70b-versatile", 0.2, 0.0), ("deepseek", "deepseek-chat", 0.15, 0.0),
              ("deepseek", "deepseek-reasoner", 0.1, 1.0)),
             (2500, 0.7, 200, 20000), (450, 0.6, 30, 4000), 2048, (0.3, 0.25, 0.25, 0.2, 0.0),
             cache=0.3, weekend=0.1, growth=0.5),
    Workload("playground", None, ("playground",), 0.03,
             (("openai", "gpt-4o", 0.3, 0.0), ("anthropic", "claude-sonnet-4-0", 0.25, 0.0),
              ("gemini", "gemini-2.5-flash", 0.2, 0.0), ("mistral", "mistral-small-latest", 0.1, 0.0),
              ("groq", "llama-3.3-70b-versatile", 0.15, 0.0)),
             (1200, 0.8, 50, 12000), (500, 0.7, 20, 3000), 2048, (0.25, 0.2, 0.2, 0.2, 0.15), weekend=0.1),
)
# Days when one workload ran far above normal: a catalogue backfill, earnings season, a diligence crunch.
SPIKES = (("catalog", 6.0), ("earnings", 8.0), ("research", 3.0))

# Median time to first token (ms), output tokens per second, and the extra output a reasoning model bills.
TRAITS = {
    "gpt-4o": (450, 85, 1.0), "gpt-4o-mini": (350, 110, 1.0), "gpt-4.1": (500, 80, 1.0),
    "gpt-4.1-mini": (380, 105, 1.0), "gpt-4.1-nano": (250, 160, 1.0), "o3-mini": (2500, 140, 3.0),
    "gpt-image-1": (0, 1, 1.0), "claude-3-5-haiku-latest": (600, 95, 1.0), "claude-haiku-4-5": (550, 120, 1.0),
    "claude-3-7-sonnet-latest": (1100, 60, 1.0), "claude-sonnet-4-0": (1000, 65, 1.0),
    "gemini-2.5-flash": (700, 180, 1.6), "llama-3.1-8b-instant": (150, 750, 1.0),
    "llama-3.3-70b-versatile": (200, 280, 1.0), "mistral-large-latest": (500, 45, 1.0),
    "mistral-small-latest": (300, 120, 1.0), "codestral-latest": (250, 150, 1.0),
    "deepseek-chat": (1400, 35, 1.0), "deepseek-reasoner": (4000, 30, 2.5),
}
CACHING = {"openai", "anthropic", "gemini", "deepseek"}  # providers that bill cached prompt tokens lower
ERRORS = {
    "openai": (("429 rate_limit_exceeded: Rate limit reached for requests per minute (RPM)", 0.65),
               ("500 server_error: The server had an error while processing your request", 0.2),
               ("503 service_unavailable: The engine is currently overloaded, please try again later", 0.15)),
    "anthropic": (("429 rate_limit_error: Number of request tokens has exceeded your per-minute rate limit", 0.45),
                  ("529 overloaded_error: Overloaded", 0.45), ("500 api_error: Internal server error", 0.1)),
    "gemini": (("429 RESOURCE_EXHAUSTED: Quota exceeded for generate_content requests per minute", 0.6),
               ("503 UNAVAILABLE: The model is overloaded. Please try again later.", 0.3),
               ("500 INTERNAL: An internal error has occurred", 0.1)),
    "groq": (("429 rate_limit_exceeded: Rate limit reached on tokens per minute (TPM)", 0.8),
             ("503 service_unavailable: Service Unavailable", 0.2)),
    "mistral": (("429 Requests rate limit exceeded", 0.7), ("503 Service unavailable", 0.3)),
    "deepseek": (("429 Rate limit reached, please slow down", 0.4), ("503 Server overloaded, please retry shortly", 0.6)),
}
TIMEOUTS = ("timeout: no response within 60 s", "timeout: no response within 120 s")
STATUSES, KINDS = ("ok", "error", "timeout"), ("text", "image")

OFFICE = (.15, .1, .08, .08, .1, .2, .45, 1.1, 2.7, 4.6, 5.6, 5.3, 3.9, 4.7, 5.4, 5.1, 4.3, 2.9, 1.6, 1.0, .8, .6, .4, .25)
BATCH = (3.5, 5, 5, 4, 2, 1.2, 1, 1.2, 1.6, 1.9, 2, 2, 1.8, 2, 2, 2, 1.8, 1.5, 1.3, 1.2, 1.1, 1.2, 1.6, 2.4)
WEEKDAY = np.array([1.0, 1.08, 1.06, 1.02, 0.86])  # Monday to Friday

MODELS = tuple(dict.fromkeys((p, m) for w in WORKLOADS for p, m, _, _ in w.models))
PROVIDERS = tuple(dict.fromkeys(p for p, _ in MODELS))
ERROR_TEXTS = tuple(t for p in PROVIDERS for t, _ in ERRORS[p]) + TIMEOUTS
TAGS_JSON = tuple(json.dumps(list(w.tags)) for w in WORKLOADS)  # the JSON type's own serialisation


def _cdfs() -> np.ndarray:
    """Cumulative share of a day's calls by local hour: office weekday, office weekend, batch."""
    office = np.array(OFFICE) / sum(OFFICE)
    rows = [office, 0.5 * office + 0.5 / 24, np.array(BATCH) / sum(BATCH)]
    return np.array([np.concatenate([[0.0], np.cumsum(r) / r.sum()]) for r in rows])


CDFS, HOURS = _cdfs(), np.arange(25.0)


def default_rows(days: int) -> int:
    return ROWS_PER_DAY * days


def _us(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(microseconds=1)


def _cdf_at(profile: np.ndarray, hour: np.ndarray) -> np.ndarray:
    i = np.minimum(hour.astype(np.int64), 23)
    lo, hi = CDFS[profile, i], CDFS[profile, i + 1]
    return lo + (hour - i) * (hi - lo)


def _tokens(rng, spec: tuple[float, float, int, int], n: int) -> np.ndarray:
    median, sigma, low, high = spec
    return np.clip(rng.lognormal(np.log(max(median, 1)), sigma, n), low, high).astype(np.int64)


@dataclass(eq=False)
class Ledger:
    """Generated rows, oldest first. Money is int64 counts of 1e-10 USD; times are µs since the epoch (UTC)."""

    workspace_id: int
    people: tuple[int, ...]
    projects: tuple[int, ...]
    created_us: np.ndarray
    model: np.ndarray
    user: np.ndarray
    project: np.ndarray  # index into ``projects``; -1 = none
    workload: np.ndarray
    kind: np.ndarray
    status: np.ndarray
    error: np.ndarray  # index into ERROR_TEXTS; -1 = none
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    cached_input_tokens: np.ndarray
    cache_write_tokens: np.ndarray
    images: np.ndarray
    latency_ms: np.ndarray
    ttft_ms: np.ndarray  # -1 = none
    estimated_units: np.ndarray
    cost_units: np.ndarray
    has_cost: np.ndarray

    def __len__(self) -> int:
        return len(self.created_us)

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), np.ndarray)}

    def total_cost(self) -> Decimal:
        return Decimal(int(self.cost_units[self.has_cost].sum(dtype=np.int64))).scaleb(-MONEY_PLACES)

    def fingerprint(self) -> str:
        h = hashlib.sha256(repr((self.workspace_id, self.people, self.projects)).encode())
        for name, values in self.arrays.items():
            h.update(name.encode())
            h.update(np.ascontiguousarray(values).tobytes())
        return h.hexdigest()

    def row(self, i: int) -> dict:
        """Row ``i`` as the values an ORM ``LedgerEntry`` holds (Decimal money, aware UTC datetime)."""
        provider, model = MODELS[self.model[i]]
        money = lambda units: Decimal(int(units)).scaleb(-MONEY_PLACES)  # noqa: E731
        return {
            "workspace_id": self.workspace_id, "user_id": self.people[self.user[i]], "api_key_id": None,
            "project_id": self.projects[self.project[i]] if self.project[i] >= 0 else None,
            "tags": json.loads(TAGS_JSON[self.workload[i]]), "provider": provider, "model": model,
            "kind": KINDS[self.kind[i]], "input_tokens": int(self.input_tokens[i]),
            "output_tokens": int(self.output_tokens[i]), "cached_input_tokens": int(self.cached_input_tokens[i]),
            "cache_write_tokens": int(self.cache_write_tokens[i]), "images": int(self.images[i]), "characters": 0,
            "seconds": None, "estimated_cost": money(self.estimated_units[i]),
            "cost": money(self.cost_units[i]) if self.has_cost[i] else None,
            "latency_ms": int(self.latency_ms[i]), "ttft_ms": int(self.ttft_ms[i]) if self.ttft_ms[i] >= 0 else None,
            "status": STATUSES[self.status[i]], "error": ERROR_TEXTS[self.error[i]] if self.error[i] >= 0 else None,
            "created_at": EPOCH + timedelta(microseconds=int(self.created_us[i])),
        }

    def columns(self, lo: int, hi: int, money, stamp) -> list[list]:
        """Rows ``lo:hi`` as one list per column of ``COLUMNS``; ``money`` and ``stamp`` format for the database."""
        s, n = slice(lo, hi), hi - lo

        def lookup(table, index):  # index -1 picks the trailing None
            return np.array([*table, None], dtype=object)[index[s]].tolist()

        cost = money(self.cost_units[s])
        for i in np.flatnonzero(~self.has_cost[s]):
            cost[i] = None
        ttft = self.ttft_ms[s].tolist()
        for i in np.flatnonzero(self.ttft_ms[s] < 0):
            ttft[i] = None
        return [
            [self.workspace_id] * n, lookup(self.people, self.user), lookup(self.projects, self.project),
            lookup(TAGS_JSON, self.workload), lookup([p for p, _ in MODELS], self.model),
            lookup([m for _, m in MODELS], self.model), lookup(KINDS, self.kind),
            self.input_tokens[s].tolist(), self.output_tokens[s].tolist(), self.cached_input_tokens[s].tolist(),
            self.cache_write_tokens[s].tolist(), self.images[s].tolist(), [0] * n,
            money(self.estimated_units[s]), cost, self.latency_ms[s].tolist(), ttft,
            lookup(STATUSES, self.status), lookup(ERROR_TEXTS, self.error), stamp(self.created_us[s]),
        ]

    def check_prices(self, samples: int = 200) -> None:
        """Price a spread of rows with ``pricing.catalog_price`` itself and insist on the same Decimal."""
        for i in np.unique(np.linspace(0, len(self) - 1, min(samples, len(self))).astype(np.int64)).tolist():
            r = self.row(i)
            usage = Usage(input_tokens=r["input_tokens"], output_tokens=r["output_tokens"], images=r["images"],
                          cached_input_tokens=r["cached_input_tokens"], cache_write_tokens=r["cache_write_tokens"])
            checks = [("cost", usage)] if r["cost"] is not None else []
            if r["status"] == "ok":  # a failed call's estimate priced a prompt the ledger no longer holds
                asked = max(r["output_tokens"], WORKLOADS[self.workload[i]].max_tokens)
                checks.append(("estimated_cost", replace(usage, output_tokens=asked)))
            for column, u in checks:
                expected = catalog_price(r["provider"], r["model"], u, r["created_at"]).total
                if expected != r[column]:
                    raise RuntimeError(f"demo {column} of row {i} is {r[column]}, the catalog says {expected}")


COLUMNS = ("workspace_id", "user_id", "project_id", "tags", "provider", "model", "kind", "input_tokens",
           "output_tokens", "cached_input_tokens", "cache_write_tokens", "images", "characters",
           "estimated_cost", "cost", "latency_ms", "ttft_ms", "status", "error", "created_at")


def generate(seed: int, *, now: datetime, days: int, rows: int, workspace_id: int, timezone: str,
             people: tuple[int, ...], projects: tuple[int, ...]) -> Ledger:
    """The demo ledger for the ``days`` before ``now``: the same arguments always give the same rows."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    rng = np.random.default_rng(seed)
    created, wk, spiked = _calendar(rng, now, days, rows, ZoneInfo(timezone))
    call = _calls(rng, wk, (created - _us(now - timedelta(days=days))) / (days * 86_400e6))
    status, error, latency, ttft = _outcomes(rng, call, spiked)
    rates = _rates(call["model"], created)
    estimated = _price(rates, call["model"], created, call["inp"], call["asked"], call["cached"],
                       call["written"], call["images"])
    for col in ("inp", "out", "cached", "written", "images"):  # failed calls report no usage
        call[col][status != 0] = 0
    cost = _price(rates, call["model"], created, call["inp"], call["out"], call["cached"],
                  call["written"], call["images"])
    o = np.argsort(created, kind="stable")
    return Ledger(
        workspace_id, tuple(people), tuple(projects), created[o], call["model"][o], call["user"][o],
        call["project"][o], wk.astype(np.int16)[o], call["kind"][o], status[o], error[o], call["inp"][o],
        call["out"][o], call["cached"][o], call["written"][o], call["images"][o], latency[o], ttft[o],
        estimated[o], cost[o], (status != STATUSES.index("timeout"))[o],
    )


def _calendar(rng, now: datetime, days: int, rows: int, tz: ZoneInfo):
    """When each call happened and for which workload: weekly rhythm, office hours, growth, spike days."""
    t0, t1 = _us(now - timedelta(days=days)), _us(now)
    first = (now - timedelta(days=days)).astimezone(tz).date()
    dates = [first + timedelta(days=i) for i in range((now.astimezone(tz).date() - first).days + 2)]
    # Local midnights in UTC, so office hours follow the workspace's clock through DST changes.
    bounds = np.array([_us(datetime.combine(d, time(), tzinfo=tz)) for d in dates], dtype=np.int64)
    day_len, nd, nw = np.diff(bounds), len(dates) - 1, len(WORKLOADS)
    lo = np.clip(t0 - bounds[:-1], 0, day_len) / day_len * 24  # the window's part of each day, in hours
    hi = np.clip(t1 - bounds[:-1], 0, day_len) / day_len * 24
    dow = np.array([d.weekday() for d in dates[:-1]])
    t = np.clip(((bounds[:-1] + bounds[1:]) / 2 - t0) / (t1 - t0), 0, 1)
    batch = np.array([w.hours == "batch" for w in WORKLOADS])
    profile = np.where(batch[None, :], 2, (dow >= 5)[:, None].astype(np.int64))  # (day, workload)

    weight = np.zeros((nd, nw))
    for k, w in enumerate(WORKLOADS):
        rhythm = np.where(dow == 5, w.weekend, np.where(dow == 6, 0.8 * w.weekend, WEEKDAY[np.minimum(dow, 4)]))
        level = np.exp(w.growth * (t - 1))
        if w.start:  # a new project ramps up over about a week
            level *= np.clip((t - w.start) / 0.08, 0, 1)
        mass = _cdf_at(profile[:, k], hi) - _cdf_at(profile[:, k], lo)
        weight[:, k] = w.share * level * rhythm * rng.lognormal(0, 0.15, nd) * mass
    spiked = np.zeros((nd, nw), dtype=bool)
    ordinary = np.flatnonzero((dow < 5) & (lo == 0) & (hi == 24) & (t > 0.1) & (t < 0.95))
    keys = [w.key for w in WORKLOADS]
    for (key, factor), d in zip(SPIKES, rng.permutation(ordinary)):
        weight[d, keys.index(key)] *= factor
        spiked[d, keys.index(key)] = True
    counts = rng.multinomial(rows, (weight / weight.sum()).ravel())

    day, wk = np.divmod(np.repeat(np.arange(nd * nw), counts), nw)
    prof = profile[day, wk]
    f_lo, f_hi = _cdf_at(prof, lo[day]), _cdf_at(prof, hi[day])
    u, hour = f_lo + rng.random(len(day)) * (f_hi - f_lo), np.zeros(len(day))
    for p in range(len(CDFS)):
        hour[prof == p] = np.interp(u[prof == p], CDFS[p], HOURS)
    created = np.clip(bounds[day] + (hour / 24 * day_len[day]).astype(np.int64), t0, t1 - 1)
    return created, wk, spiked[day, wk]


def _calls(rng, wk: np.ndarray, tf: np.ndarray) -> dict[str, np.ndarray]:
    """What each call asked of which model, and who made it; ``tf`` is its place in the window, 0 to 1."""
    n = len(wk)
    call = {c: np.zeros(n, np.int16) for c in ("model", "user", "kind", "project")}
    call |= {c: np.zeros(n, np.int64) for c in ("inp", "out", "asked", "cached", "written", "images")}
    reasoning = np.array([TRAITS[m][2] for _, m in MODELS])
    caches = np.array([p in CACHING for p, _ in MODELS])
    anthropic = np.array([p == "anthropic" for p, _ in MODELS])
    for k, w in enumerate(WORKLOADS):
        idx = np.flatnonzero(wk == k)
        m = len(idx)
        odds = np.array([x[2] for x in w.models]) * np.exp(np.outer(tf[idx] - 1, [x[3] for x in w.models]))
        pick = (rng.random(m)[:, None] > np.cumsum(odds / odds.sum(1, keepdims=True), 1)).sum(1)
        gm = np.array([MODELS.index((p, name)) for p, name, _, _ in w.models])[np.minimum(pick, len(w.models) - 1)]
        inp = _tokens(rng, w.tokens_in, m)
        if w.kind == "image":  # gpt-image-1 bills a 1024² image as 272, 1056 or 4160 output tokens
            out = rng.choice(np.array([272, 1056, 4160]), m, p=[0.3, 0.55, 0.15])
            call["images"][idx], call["kind"][idx] = 1, KINDS.index("image")
        else:
            out = np.minimum((_tokens(rng, w.tokens_out, m) * reasoning[gm]).astype(np.int64), w.max_tokens)
        reuse = (rng.random(m) < w.cache) & caches[gm] & (inp >= 1024)
        prefix = (inp * rng.uniform(0.4, 0.9, m)).astype(np.int64) // 128 * 128  # caches grow in 128-token blocks
        writes = reuse & anthropic[gm] & (rng.random(m) < 0.1)  # Anthropic bills writing the cache too
        call["model"][idx], call["inp"][idx], call["out"][idx] = gm, inp, out
        call["asked"][idx] = np.maximum(out, w.max_tokens)
        call["cached"][idx], call["written"][idx] = np.where(reuse & ~writes, prefix, 0), np.where(writes, prefix, 0)
        call["user"][idx] = rng.choice(len(w.people), m, p=np.array(w.people) / sum(w.people))
        call["project"][idx] = -1 if w.project is None else w.project
    return call


def _outcomes(rng, call: dict[str, np.ndarray], spiked: np.ndarray):
    """Status, error text, latency and time to first token. Bursts trip rate limits; huge prompts time out."""
    n, model, inp = len(spiked), call["model"], call["inp"]
    r = rng.random(n)
    p_err = 0.012 + 0.045 * spiked
    failed = r < p_err
    long_wait = inp > 20000
    timed_out = ~failed & (r < p_err + 0.003 + 0.012 * long_wait)
    error = np.full(n, -1, np.int16)
    provider = np.array([PROVIDERS.index(p) for p, _ in MODELS])[model]
    for pi, name in enumerate(PROVIDERS):
        sel = np.flatnonzero(failed & (provider == pi))
        first = ERROR_TEXTS.index(ERRORS[name][0][0])
        error[sel] = first + rng.choice(len(ERRORS[name]), len(sel), p=[x[1] for x in ERRORS[name]])
    error[timed_out] = np.where(long_wait[timed_out], ERROR_TEXTS.index(TIMEOUTS[1]), ERROR_TEXTS.index(TIMEOUTS[0]))

    first_token, per_second = (np.array([TRAITS[m][j] for _, m in MODELS])[model] for j in (0, 1))
    ttft = first_token * (1 + inp / 30000) * rng.lognormal(0, 0.35, n)
    latency = ttft + call["out"] / per_second * 1000 * rng.lognormal(0, 0.2, n) + rng.lognormal(np.log(40), 0.3, n)
    image = call["kind"] == KINDS.index("image")
    latency = np.where(image, (6000 + call["out"] * 9) * rng.lognormal(0, 0.25, n), latency)
    rate_limited = np.array([t.startswith("429") for t in ERROR_TEXTS])[error] & failed
    latency = np.where(failed, np.where(rate_limited, rng.lognormal(np.log(160), 0.4, n),
                                        rng.lognormal(np.log(900), 0.7, n)), latency)
    latency = np.where(timed_out, np.where(long_wait, 120_000, 60_000), latency)
    ttft = np.where(failed | timed_out | image, -1, ttft)
    status = np.where(failed, STATUSES.index("error"), np.where(timed_out, STATUSES.index("timeout"), 0))
    return status.astype(np.int8), error, np.maximum(latency, 1).astype(np.int64), ttft.astype(np.int64)


RATE_FIELDS = ("input", "output", "cache_read", "cache_write", "image")


def _rates(model, created) -> tuple[np.ndarray, list]:
    """Each row's index into a table of catalog ``Rates`` (-1 where the price is tiered, not linear)."""
    # Looked up per row, not per day: some prices change by time of day (DeepSeek's off-peak hours).
    stamps = created.astype("datetime64[us]").astype(object)
    table, where, rate = [], {id(None): -1}, np.empty(len(model), np.int64)
    for m in np.unique(model).tolist():
        sel = np.flatnonzero(model == m)
        provider, name = MODELS[m]
        found = [catalog_rates(provider, name, ts.replace(tzinfo=UTC)) for ts in stamps[sel].tolist()]
        for key, r in {id(r): r for r in found}.items():
            if key not in where:
                where[key] = len(table)
                table.append(r)
        rate[sel] = [where[id(r)] for r in found]
    return rate, table


def _price(rates, model, created, inp, out, cached, written, images) -> np.ndarray:
    """Each row's catalog price in 1e-10 USD: ``Rates.price`` in int64 arithmetic, so exact."""
    rate, table = rates
    units = np.zeros(len(model), np.int64)
    if table:
        places = max(MONEY_PLACES, *(-getattr(r, f).normalize().as_tuple().exponent for r in table for f in RATE_FIELDS))
        # Exact: no rate has more than ``places`` decimals, so each scales to a whole number.
        ints = [[int(getattr(r, f).scaleb(places)) for f in RATE_FIELDS] for r in table]
        if max(map(max, ints)) * max(int(x.max()) for x in (inp, out, images)) * 3 >= 2**63:
            raise OverflowError("demo token counts too large for int64 pricing")
        ints = np.array(ints, dtype=np.int64)
        ok = rate >= 0
        r = ints[rate[ok]]
        uncached = np.maximum(inp[ok] - cached[ok] - written[ok], 0)
        # Each component rounds on its own, as ``Price`` does, so components sum to the total.
        parts = (uncached * r[:, 0], cached[ok] * r[:, 2], written[ok] * r[:, 3], out[ok] * r[:, 1], images[ok] * r[:, 4])
        units[ok] = sum(_to_money(x, places) for x in parts)
    for i in np.flatnonzero(rate < 0):  # tiered prices take the catalog's general path
        usage = Usage(input_tokens=int(inp[i]), output_tokens=int(out[i]), cached_input_tokens=int(cached[i]),
                      cache_write_tokens=int(written[i]), images=int(images[i]))
        total = catalog_price(*MODELS[model[i]], usage, EPOCH + timedelta(microseconds=int(created[i]))).total
        units[i] = int(total.scaleb(MONEY_PLACES))
    return units


def _to_money(x: np.ndarray, places: int) -> np.ndarray:
    """``dbtypes.to_money`` for non-negative counts of 10**-places USD: round half to even to 1e-10."""
    if places == MONEY_PLACES:
        return x
    d = 10 ** (places - MONEY_PLACES)
    q, r = np.divmod(x, d)
    return q + ((2 * r > d) | ((2 * r == d) & (q % 2 == 1)))

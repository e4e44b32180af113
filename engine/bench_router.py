"""What the generation path adds to a call: ``generate()`` against the same SDK call made directly (``--calls``).

Both go to the fake OpenAI server of the test suite on 127.0.0.1 (keep-alive, answers at
once), so the difference is Meterbook's own work: planning, routing, decrypting the key,
pricing, the ledger row and health update on a fresh SQLite database. Calls alternate
between the two so that drift in the machine's speed affects both alike.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time


def add_arguments(parser) -> None:
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=300, help="streamed calls for the time-to-first-token figure")


def _ms(seconds: list[float], q: float) -> float:
    ordered = sorted(seconds)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)


def run(args) -> dict:
    from openai import OpenAI

    from engine import connections, db, generation, migrate, routes, vault
    from engine.bench import restore_env, scratch_database
    from engine.config import get_settings
    from engine.permissions import Actor
    from tests.fakes.openai_server import API_KEY, FakeOpenAI

    with tempfile.TemporaryDirectory(prefix="meterbook-bench-router-") as tmp, FakeOpenAI() as fake, \
            scratch_database(None) as engine:
        saved = {k: os.environ.get(k) for k in ("METERBOOK_DATA_DIR", "METERBOOK_SECRET_KEY")}
        os.environ["METERBOOK_DATA_DIR"] = tmp
        os.environ["METERBOOK_SECRET_KEY"] = vault.format_master_key(vault.generate_master_key())
        get_settings.cache_clear()
        migrate.upgrade(engine)
        db.use_engine(engine)
        try:
            from engine import accounts

            user, ws = accounts.create_first_owner("timing@meterbook.local", "Bench", "correct horse battery staple", "Bench")
            actor = Actor(user.id, ws.id)
            conn = connections.create_connection(actor, name="openai", provider_type="openai", api_key=API_KEY,
                                                 base_url=fake.base_url)
            routes.add_target(actor, "text", connection_id=conn.id, model="gpt-4o-mini")
            client = OpenAI(api_key=API_KEY, base_url=fake.base_url, max_retries=0)
            messages = [{"role": "user", "content": "Say hello in five words."}]
            request = generation.GenerationRequest(prompt="Say hello in five words.", max_tokens=64)

            def direct() -> None:
                client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=64)

            def through() -> None:
                generation.generate(request, actor)

            for _ in range(50):  # warm both paths: connection pools, caches, tokenizer
                direct()
                through()
            direct_s, generate_s = [], []
            for _ in range(args.calls):
                t = time.perf_counter()
                direct()
                direct_s.append(time.perf_counter() - t)
                t = time.perf_counter()
                through()
                generate_s.append(time.perf_counter() - t)

            direct_ttft, generate_ttft = [], []
            for _ in range(args.streams):
                t = time.perf_counter()
                s = client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=64,
                                                   stream=True, stream_options={"include_usage": True})
                for chunk in s:
                    if chunk.choices and chunk.choices[0].delta.content:
                        direct_ttft.append(time.perf_counter() - t)
                        break
                for _ in s:
                    pass
                t = time.perf_counter()
                pieces = iter(generation.stream(request, actor))
                next(pieces)
                generate_ttft.append(time.perf_counter() - t)
                for _ in pieces:
                    pass
        finally:
            db.use_engine(None)
            restore_env(saved)
            get_settings.cache_clear()

    overhead = [g - d for g, d in zip(generate_s, direct_s, strict=True)]
    return {
        "bench": "router",
        "calls": args.calls,
        "direct_calls_per_s": round(len(direct_s) / sum(direct_s)),
        "generate_calls_per_s": round(len(generate_s) / sum(generate_s)),
        "direct_p50_ms": _ms(direct_s, 0.5),
        "generate_p50_ms": _ms(generate_s, 0.5),
        "overhead_p50_ms": round(_ms(generate_s, 0.5) - _ms(direct_s, 0.5), 3),
        "overhead_p99_ms": round(_ms(generate_s, 0.99) - _ms(direct_s, 0.99), 3),
        "overhead_pairwise_median_ms": round(statistics.median(overhead) * 1000, 3),
        "ttft_overhead_p50_ms": round(_ms(generate_ttft, 0.5) - _ms(direct_ttft, 0.5), 3),
    }

"""How many spans per second one core prices once the price records are cached (SPEC §3).

    .venv/bin/python -m bench.bench_price

The budget is about 1 µs per span, i.e. at least 500k spans/s per core. The mix is what a
busy node sees: chat models from several providers with and without cache tokens, long-context
calls above a tier, provider-prefixed and date-suffixed names, unknown models, caller-priced
spans and spans without usage, spread over two days.
"""

from __future__ import annotations

import datetime
import random
import time
from typing import Any

from stages.price import PriceTable

_MODELS = [
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4o-mini-2024-07-18"),
    (None, "openai/gpt-4o"),
    ("azure_openai", "gpt-4o"),
    ("openai", "o3"),
    ("anthropic", "claude-3-5-sonnet-20241022"),
    ("anthropic", "claude-sonnet-4-5"),
    ("aws-bedrock", "us.anthropic.claude-3-5-sonnet-20241022-v2:0"),
    ("vertex_ai", "gemini-2.5-pro"),
    ("gemini", "gemini-2.0-flash"),
    ("mistralai", "mistral-large-latest"),
    ("groq", "llama-3.1-8b-instant"),
    ("deepseek", "deepseek-chat"),
    (None, "my-self-hosted-model"),  # unknown: unpriced
]
_DAYS = (datetime.date(2025, 7, 1), datetime.date(2025, 7, 2))


def spans(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """`count` span pricing requests, as the keyword arguments of `PriceTable.price`."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        provider, model = rng.choice(_MODELS)
        input_tokens = rng.choice((0, 120, 1_500, 12_000, 90_000, 250_000))
        cache_read = rng.choice((0, 0, input_tokens // 2))
        cache_write = rng.choice((0, 0, 0, (input_tokens - cache_read) // 4))
        output_tokens = rng.choice((0, 40, 400, 4_000))
        roll = rng.random()
        out.append(
            {
                "provider": provider,
                "model": model,
                "day": rng.choice(_DAYS),
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_read_tokens": cache_read,
                "cache_write_tokens": cache_write,
                "reasoning_tokens": output_tokens // 4,
                "has_usage": roll > 0.05,  # 5% of spans carry no usage
                "caller_total": 0.0123 if roll > 0.97 else None,  # 3% bring their own cost
            }
        )
    return out


def measure(seconds: float = 2.0) -> dict:
    """Price the mix in a loop for about `seconds`; the cache is warmed first. The rate is per
    CPU-second of this process (`time.process_time`), i.e. per core, so that other work on the
    machine does not count against it; the wall-clock rate is reported beside it."""
    table = PriceTable.load()
    work = spans(10_000)
    price = table.price
    for kwargs in work:  # warm the (provider, model, day) cache
        price(**kwargs)
    misses = table.cache_info().misses
    done = 0
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    deadline = wall_started + seconds
    while True:
        for kwargs in work:
            price(**kwargs)
        done += len(work)
        if time.perf_counter() >= deadline:
            break
    cpu = time.process_time() - cpu_started
    wall = time.perf_counter() - wall_started
    return {
        "spans": done,
        "cpu_seconds": round(cpu, 3),
        "spans_per_s": round(done / cpu),
        "us_per_span": round(cpu / done * 1e6, 3),
        "wall_spans_per_s": round(done / wall),
        "distinct_keys": misses,
        "misses_while_timed": table.cache_info().misses - misses,
    }


if __name__ == "__main__":
    print(measure())

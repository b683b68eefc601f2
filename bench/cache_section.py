"""Section "cache": the share of prompt tokens the provider bills at the cached rate, with
the cache-friendly prompt layout beside the old one, in one run against the fake provider.

Bots with personas of 1,200 tokens or more speak in chats of every size, from quiet ones to
chats whose last twenty messages fill the prompt budget. The same items, in the same
interleaved order (as claims would hand them out), go through ``LLMBatchClient`` twice:

- **old layout**: the budget of the previous ``build_user_prompt``, which shortened the
  persona first to make room for the chat, so the prompt's start moved with the history;
- **cache-friendly layout**: today's ``build_user_prompt`` (the persona's kept length
  depends on the persona alone, the changing part last) and OpenAI's ``prompt_cache_key``.

The fake's cache is emptied between the two. Figures: prompt and cached tokens, the cached
share, and the cost per message at gpt-4o-mini's prices (cached input at half), against the
uncached price. The fake models OpenAI's matching (1,024 tokens, then 128-token steps, a few
minutes' lifetime), not its routing across machines, so ``prompt_cache_key`` and the grouping
of a claim by bot, which raise the hit rate at a real provider, change nothing here.

    python -m bench.cache_section [--items 400] [--bots 8]
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from bench import harness

TRAITS = ("grew up in Izmir", "trades index futures", "keeps bees", "quotes old films",
          "distrusts round numbers", "cooks for the whole street", "reads annual reports",
          "cycles to work in any weather", "collects fountain pens", "argues about football")


def persona(rng: random.Random, name: str, min_chars: int = 5200) -> str:
    sentences: list[str] = []
    while sum(len(s) + 1 for s in sentences) < min_chars:
        a, b = rng.sample(TRAITS, 2)
        sentences.append(f"{name} {a} and {b}; when asked about it, {name} tells story "
                         f"number {len(sentences)} in a warm, dry voice.")
    return " ".join(sentences)


def workload(items: int, bots: int, seed: int = 13) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    personas = {f"bot{n}": persona(rng, f"bot{n}") for n in range(bots)}
    work = []
    for n in range(items):
        name = rng.choice(sorted(personas))
        busy = rng.random() < 0.5  # half the chats are busy: their history fills the budget
        history = [f"member {i}: " + "word " * rng.randint(40 if busy else 4, 90 if busy else 20)
                   for i in range(rng.randint(12, 20) if busy else rng.randint(0, 6))]
        work.append({"bot": name, "persona": personas[name], "chat": f"chat {n % 40}",
                     "recent": history})
    return work


def old_layout(bot: str, persona_text: str, chat: str, recent: list[str]) -> str:
    """The previous budget: the persona shortened first (to 500 characters at least), so
    its cut, and with it the prompt's start, followed the chat's history."""
    from batchgen.core import prompts as p

    name, kept = p._clean(bot)[:100], p._clean(persona_text)
    title, lines = p._clean(chat)[:200], p._recent_lines(recent)
    room = p.MAX_PROMPT_CHARS - len(p._compose(name, "", title, ""))
    floor = min(len(kept), 500)
    while lines and len(p._block(lines)) > room - floor:
        lines.pop(0)
    kept, _ = p._shorten(kept, room - len(p._block(lines)))
    return p._compose(name, kept, title, p._block(lines))


def new_layout(bot: str, persona_text: str, chat: str, recent: list[str]) -> str:
    from batchgen.core.prompts import build_user_prompt

    return build_user_prompt(bot, persona_text, chat, recent).text


def measure(services: harness.Services, work: list[dict[str, Any]],
            layout: Callable[[str, str, str, list[str]], str], cache_keys: bool,
            workers: int) -> dict[str, Any]:
    from batchgen.core import pricing
    from batchgen.llm import LLMBatchClient

    harness.configure_fake(services, cache_ttl=300.0)  # and an empty cache
    client = LLMBatchClient(max_workers=workers)
    futures = [client.submit(layout(w["bot"], w["persona"], w["chat"], w["recent"]),
                             cache_key=f"bot-{w['bot']}" if cache_keys else None)
               for w in work]
    results = [f.result() for f in futures]
    ok = [r for r in results if r.ok]
    prompt = sum(r.prompt_tokens for r in ok)
    cached = sum(r.cached_tokens for r in ok)
    cost = sum((pricing.cost(r.model, r.prompt_tokens, r.cached_tokens, r.completion_tokens)
                for r in ok), Decimal(0))
    full = sum((pricing.full_cost(r.model, r.prompt_tokens, r.cached_tokens,
                                  r.completion_tokens) for r in ok), Decimal(0))
    return {"messages": len(ok), "failed": len(results) - len(ok), "prompt_tokens": prompt,
            "cached_tokens": cached, "cached_share": round(cached / prompt, 4) if prompt else None,
            "mean_prompt_tokens": round(prompt / len(ok)) if ok else None,
            "cost_per_message_usd": float(cost / len(ok)) if ok else None,
            "uncached_cost_per_message_usd": float(full / len(ok)) if ok else None}


def cache_section(services: harness.Services, items: int, bots: int,
                  workers: int = 10) -> dict[str, Any]:
    work = workload(items, bots)
    old = measure(services, work, old_layout, cache_keys=False, workers=workers)
    new = measure(services, work, new_layout, cache_keys=True, workers=workers)
    ratio = (new["cost_per_message_usd"] / old["cost_per_message_usd"]
             if old["cost_per_message_usd"] else None)
    return {"items": items, "bots": bots, "persona_tokens_min": min(
                len(w["persona"]) // 4 for w in work), "model": "gpt-4o-mini",
            "old_layout": old, "cache_friendly_layout": new,
            "cost_per_message_new_vs_old": round(ratio, 4) if ratio else None}


def table(result: dict[str, Any]) -> list[str]:
    lines = [f"### Prompt caching: {result['items']} items, {result['bots']} bots, personas "
             f">= {result['persona_tokens_min']} tokens, {result['model']} prices", "",
             "| Layout | Messages | Prompt tokens (mean) | Cached tokens | Cached share "
             "| Cost / message | Uncached cost / message |", "|---|---|---|---|---|---|---|"]
    for name, key in (("old (persona cut first)", "old_layout"),
                      ("cache-friendly", "cache_friendly_layout")):
        row = result[key]
        lines.append(f"| {name} | {row['messages']} | {row['prompt_tokens']} "
                     f"({row['mean_prompt_tokens']}) | {row['cached_tokens']} | "
                     f"{100 * (row['cached_share'] or 0):.1f}% | "
                     f"${row['cost_per_message_usd']:.8f} | "
                     f"${row['uncached_cost_per_message_usd']:.8f} |")
    lines += ["", f"Cost per message, cache-friendly vs old: "
                  f"{result['cost_per_message_new_vs_old']}×"]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--bots", type=int, default=8)
    args = parser.parse_args(argv)
    services = harness.start_services()
    try:
        harness.setup_django(services)
        result = cache_section(services, args.items, args.bots)
    finally:
        services.stop()
    print("\n".join(table(result)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

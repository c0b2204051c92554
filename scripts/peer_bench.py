#!/usr/bin/env python3
"""The client load of scripts/peer-bench: the same streamed chat completions, greedy, sent
through OpenAI's own Python client to two OpenAI-compatible servers (Lore and llama.cpp's
llama-server), at each concurrency in turn, and the figures of both side by side.

For each concurrency N it runs `--rounds` rounds per server (more where N is small, so at
least 16 requests stand behind each time to first token), alternating which server goes
first so a drift of the machine falls on both. A round sends N requests at once, each with
its own prompt (numbered, so no server answers one from the prompt cache of an earlier
round), and waits for all of them. Per round: aggregate tokens/s (every answer's tokens
over the round's wall time, prefill included) and each request's time to first token (the
first chunk with text). Tokens are counted with llama-server's /tokenize on each answer's
text, the same count for both servers whatever pieces they stream in.
"""
import argparse
import asyncio
import json
import statistics
import sys
import time
import urllib.request

from openai import AsyncOpenAI, DefaultAsyncHttpxClient

try:  # the client's HTTP library: httpx2 in newer releases of `openai`, httpx before
    import httpx2 as httpx
except ImportError:
    import httpx

SYSTEM = "You are a helpful assistant."

TOPICS = [
    "how rivers shape valleys", "the history of paper", "why the sky is blue",
    "how bees make honey", "the life of a star", "how bridges carry weight",
    "the water cycle", "how vaccines work", "the invention of the printing press",
    "how volcanoes form", "the migration of birds", "how a compass works",
    "the causes of the seasons", "how bread rises", "the first steam engines",
    "how coral reefs grow", "the rules of chess", "how glaciers move",
    "the history of the bicycle", "how plants drink water", "the phases of the moon",
    "how clocks keep time", "the silk road", "how lightning forms",
    "the life cycle of a frog", "how windmills grind grain", "the origin of maps",
    "how tides rise and fall", "the first telescopes", "how forests recover from fire",
    "the history of glass", "how whales sing",
]


def prompt(round_no, i):
    topic = TOPICS[i % len(TOPICS)]
    return f"Request {round_no}-{i}. Write a long, detailed explanation of {topic} for a curious student."


async def one(client, model, text, max_tokens, started):
    first = None
    pieces = []
    stream = await client.chat.completions.create(
        model=model,
        # A system message of our own: without one, llama-server's Jinja template of
        # some models (SmolLM2's) adds a default one that llama.cpp's built-in templates,
        # which Lore uses, do not, and the two prompts would differ.
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
    )
    async for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta.content
        if delta:
            if first is None:
                first = time.perf_counter() - started
            pieces.append(delta)
    return first, "".join(pieces)


def tokens(server_url, text):
    body = json.dumps({"content": text, "add_special": False}).encode()
    request = urllib.request.Request(server_url.rstrip("/") + "/tokenize", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return len(json.load(response)["tokens"])


async def round_of(client, model, n, round_no, max_tokens):
    started = time.perf_counter()
    results = await asyncio.gather(*(one(client, model, prompt(round_no, i), max_tokens, started) for i in range(n)))
    wall = time.perf_counter() - started
    return wall, results


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lore", required=True, help="Lore's base URL, e.g. http://127.0.0.1:8080/v1")
    ap.add_argument("--lore-model", required=True)
    ap.add_argument("--server", required=True, help="llama-server's base URL, e.g. http://127.0.0.1:8081/v1")
    ap.add_argument("--server-model", default="model")
    ap.add_argument("--concurrency", default="1,4,8,16,32")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--meta", default="{}", help="JSON merged into the --json object")
    args = ap.parse_args()

    def client(url):
        # Idle connections are dropped after 1 s, before either server closes them (llama-server
        # after 5 s, which is also the client's default): reusing one a server is closing
        # would fail the request.
        http = DefaultAsyncHttpxClient(limits=httpx.Limits(max_connections=256, keepalive_expiry=1.0))
        return AsyncOpenAI(base_url=url, api_key="none", timeout=600, max_retries=0, http_client=http)

    servers = {"lore": (client(args.lore), args.lore_model), "server": (client(args.server), args.server_model)}
    tokenizer_url = args.server[: -len("/v1")] if args.server.endswith("/v1") else args.server
    # Warm-up (pages loaded, the template's shared prefix cached on both), and a check
    # that both servers read the same prompt: the same number of prompt tokens.
    prompt_tokens = {}
    for name, (client, model) in servers.items():
        whole = await client.chat.completions.create(
            model=model,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt("warm", 0)}],
            max_tokens=16,
            temperature=0.0,
        )
        prompt_tokens[name] = whole.usage.prompt_tokens if whole.usage else None
    if prompt_tokens["lore"] != prompt_tokens["server"]:
        print(f"peer_bench: the servers read prompts of different lengths ({prompt_tokens}): "
              "their chat templates differ, so the comparison is not like for like", file=sys.stderr)

    runs = []
    same_text = total_texts = 0
    round_no = 0
    for n in [int(c) for c in args.concurrency.split(",")]:
        figures = {name: {"tok_s": [], "ttft": [], "texts": []} for name in servers}
        # At least 16 requests behind each time-to-first-token figure: with fewer, one
        # slow request on a busy machine moves the median of a single stream by 10 %.
        for r in range(max(args.rounds, -(-16 // n))):
            round_no += 1
            order = ["server", "lore"] if r % 2 == 0 else ["lore", "server"]
            for name in order:
                client, model = servers[name]
                wall, results = await round_of(client, model, n, round_no, args.max_tokens)
                count = sum(tokens(tokenizer_url, text) for _, text in results)
                figures[name]["tok_s"].append(count / wall)
                figures[name]["ttft"] += [t * 1000 for t, _ in results if t is not None]
                figures[name]["texts"].append([text for _, text in results])
        # Greedy on the same weights: the answers should match, a check that the two
        # servers did the same work (batched float sums may part them late in a text).
        for lore_texts, server_texts in zip(figures["lore"]["texts"], figures["server"]["texts"]):
            for a, b in zip(lore_texts, server_texts):
                total_texts += 1
                same_text += a[:80] == b[:80]
        lore_tok_s = statistics.mean(figures["lore"]["tok_s"])
        server_tok_s = statistics.mean(figures["server"]["tok_s"])
        lore_p50 = percentile(figures["lore"]["ttft"], 50)
        server_p50 = percentile(figures["server"]["ttft"], 50)
        run = {
            "concurrency": n,
            "lore_tok_s": round(lore_tok_s, 1),
            "server_tok_s": round(server_tok_s, 1),
            "ratio": round(lore_tok_s / server_tok_s, 3),
            "lore_ttft_p50_ms": round(lore_p50, 1),
            "server_ttft_p50_ms": round(server_p50, 1),
            "ttft_ratio": round(lore_p50 / server_p50, 3),
            "lore_ttft_p95_ms": round(percentile(figures["lore"]["ttft"], 95), 1),
            "server_ttft_p95_ms": round(percentile(figures["server"]["ttft"], 95), 1),
            "lore_rounds_tok_s": [round(x, 1) for x in figures["lore"]["tok_s"]],
            "server_rounds_tok_s": [round(x, 1) for x in figures["server"]["tok_s"]],
        }
        runs.append(run)
        if not args.json:
            if len(runs) == 1:
                print(f"{'at once':>7} {'Lore tok/s':>10} {'server tok/s':>12} {'ratio':>6} "
                      f"{'TTFT p50 Lore':>13} {'server':>8} {'ratio':>6} {'TTFT p95 Lore':>13} {'server':>8}")
            print(f"{n:>7} {run['lore_tok_s']:>10.1f} {run['server_tok_s']:>12.1f} {run['ratio']:>6.2f} "
                  f"{run['lore_ttft_p50_ms']:>10.1f} ms {run['server_ttft_p50_ms']:>5.1f} ms {run['ttft_ratio']:>6.2f} "
                  f"{run['lore_ttft_p95_ms']:>10.1f} ms {run['server_ttft_p95_ms']:>5.1f} ms", flush=True)
    out = json.loads(args.meta)
    out["runs"] = runs
    out["same_start_of_answer"] = f"{same_text}/{total_texts}"
    out["prompt_tokens"] = prompt_tokens
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"answers beginning alike (first 80 characters, greedy on the same weights): {same_text} of {total_texts}; "
              f"prompt tokens of one request: Lore {prompt_tokens['lore']}, llama-server {prompt_tokens['server']}")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)

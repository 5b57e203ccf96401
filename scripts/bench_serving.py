"""Serving measurements: the batched SavedModel signature and a live `tfllm-serve`.

    python scripts/bench_serving.py --workdir=runs/quickstart/lm \\
        --baseline_saved_model=/tmp/old_export/saved_model \\
        --output=docs/measurements/serving_journey_lm.json

What is measured (2 threads of TF, this machine's load recorded beside it):

* **SavedModel, batch of 8** (`--workdir`/export/saved_model, exported by
  this version): one `generate_greedy` call on 8 prompts against 8 calls of
  one prompt each, same signature, `--sm_new_tokens` tokens; and, with
  `--baseline_saved_model`, the same 8-prompt call on an export written by
  the previous version (whose signature decoded prompts one at a time with
  `tf.map_fn`): "today's one-at-a-time". Texts must be identical across all
  three. Medians over `--rounds` rounds, variants interleaved per round.
* **Server** (`tfllm-serve --workdir --max_batch=8`, Keras backend, XLA):
  - first token: `--ttft_requests` sequential streaming requests with a
    `--prompt_tokens`-token prompt (sampler temperature, seed i); time from
    sending the request to the first event (a "token" event, or "done" when
    the first token was eos), median and p90, and to the "done" event;
  - throughput: the same `--clients` × `--requests` requests (prompt i cut
    to `--prompt_tokens` tokens, `--new_tokens` tokens, sampler temperature,
    seed i), first one at a time (one client), then from `--clients`
    concurrent clients; tokens/s = generated tokens / wall time; per-request
    latency p50/p99. Every concurrent completion must equal its sequential
    one (same prompt and seed), so batching changed no text;
  - bad requests: during the concurrent run one more client sends
    `--bad_rounds` rounds of the malformed requests in BAD (each must get a
    4xx with a one-line error); afterwards /healthz must answer.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

BAD = [  # body, expected status
    ("{broken", 400),
    ("", 400),
    ({"max_new_tokens": 3}, 400),
    ({"prompt": 1}, 400),
    ({"prompt": "a", "max_new_tokens": 0}, 400),
    ({"prompt": "a", "max_new_tokens": 10**9}, 400),
    ({"prompt": "a", "sampler": "beam"}, 400),
    ({"prompt": "a", "temperature": float("inf")}, 400),
    ({"prompt": "a", "sampler": "top_p", "top_p": 0}, 400),
    ({"prompt": "a", "top_k": -1}, 400),
    ({"prompt": "a", "stream": 1}, 400),
    ({"prompt": "a", "tempreature": 2}, 400),
    ({"prompt": "word " * 5000}, 400),
    ([], 400),
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def sst2_prompts(tokenizer, count: int, tokens: int) -> list[str]:
    """SST-2 dev sentences (what the journey LM read) cut to exactly `tokens` tokens."""
    from tfllm.data.corpus import bundled_paths

    prompts = []
    with gzip.open(bundled_paths("sst2")["dev"], "rt", encoding="utf-8") as f:
        for line in f:
            text = line.split("\t")[0]
            ids = tokenizer.encode(text)
            if len(ids) >= tokens and text != "sentence":
                prompts.append(tokenizer.decode(ids[:tokens]))
                if len(prompts) == count:
                    return prompts
    raise SystemExit(f"fewer than {count} SST-2 dev sentences have {tokens} tokens")


def bench_saved_model(args, prompts: list[str]) -> dict:
    import tensorflow as tf

    from tfllm.export.verified import load_serving

    variants = {"batched_8": load_serving(os.path.join(args.workdir, "export", "saved_model"))}
    if args.baseline_saved_model:
        variants["previous_map_fn_8"] = load_serving(args.baseline_saved_model)

    def call(loaded, batch: list[str]) -> list[bytes]:
        out = loaded.generate_greedy(
            tf.constant(batch), tf.constant(args.sm_new_tokens), tf.constant(1.0),
            tf.constant(0), tf.constant(1.0), tf.constant(0),
        )  # fmt: skip
        return out["completions"].numpy().tolist()

    runs = {
        "batched_8": lambda: call(variants["batched_8"], prompts),
        "one_at_a_time_8x1": lambda: [t for p in prompts for t in call(variants["batched_8"], [p])],
    }
    if "previous_map_fn_8" in variants:
        runs["previous_map_fn_8"] = lambda: call(variants["previous_map_fn_8"], prompts)
    texts = {name: fn() for name, fn in runs.items()}  # warm-up (traces), and the texts
    identical = all(t == texts["batched_8"] for t in texts.values())
    counts = (
        variants["batched_8"]
        .signatures["generate"](
            prompts=tf.constant(prompts),
            max_new_tokens=tf.fill([len(prompts)], args.sm_new_tokens),
            sampler=tf.fill([len(prompts)], "greedy"),
            temperature=tf.ones([len(prompts)]),
            top_k=tf.zeros([len(prompts)], tf.int32),
            top_p=tf.ones([len(prompts)]),
            seed=tf.zeros([len(prompts)], tf.int32),
        )["num_tokens"]
        .numpy()
    )
    tokens = int(counts.sum())
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.rounds):
        names = list(runs)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            started = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - started)
    result = {
        "prompts": len(prompts),
        "new_tokens_requested": args.sm_new_tokens,
        "tokens_generated": tokens,
        "identical_text": identical,
        "seconds": seconds,
        "median_tokens_per_second": {n: tokens / statistics.median(s) for n, s in seconds.items()},
    }
    base = result["median_tokens_per_second"]
    result["speedup_vs_one_at_a_time"] = base["batched_8"] / base["one_at_a_time_8x1"]
    if "previous_map_fn_8" in base:
        result["speedup_vs_previous_export"] = base["batched_8"] / base["previous_map_fn_8"]
    return result


def stream_once(url: str, body: dict) -> dict:
    started = time.perf_counter()
    first = None
    with httpx.stream("POST", url, content=json.dumps(body), timeout=300) as r:
        kind = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                if first is None:  # a token event, or "done" when eos came first
                    first = time.perf_counter() - started
                if kind == "done":
                    done = json.loads(line.split(":", 1)[1])
                    return {"first_token_s": first, "total_s": time.perf_counter() - started,
                            "num_tokens": done["num_tokens"]}  # fmt: skip
    raise RuntimeError(f"no done event for {body}")


def run_requests(url: str, bodies: list[dict], clients: int) -> tuple[float, list[dict]]:
    def one(body: dict) -> dict:
        started = time.perf_counter()
        response = httpx.post(url, content=json.dumps(body), timeout=600)
        response.raise_for_status()
        return {**response.json(), "latency_s": time.perf_counter() - started}

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, bodies))
    return time.perf_counter() - started, results


def send_bad(url: str, rounds: int, log: list) -> None:
    for _ in range(rounds):
        for body, status in BAD:
            content = body if isinstance(body, str) else json.dumps(body)
            r = httpx.post(url, content=content, timeout=60)
            error = r.json().get("error", "")
            log.append({"status": r.status_code, "expected": status, "one_line": "\n" not in error,
                        "error": error[:120]})  # fmt: skip


def throughput_summary(wall: float, results: list[dict]) -> dict:
    tokens = sum(r["num_tokens"] for r in results)
    latencies = [r["latency_s"] for r in results]
    return {
        "requests": len(results),
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_second": tokens / wall,
        "latency_p50_s": percentile(latencies, 0.5),
        "latency_p99_s": percentile(latencies, 0.99),
    }


def bench_server(args, prompts: list[str]) -> dict:
    from tfllm.serving.process import Server

    flags = [f"--max_batch={args.clients}", f"--stream_chunk={args.stream_chunk}"]
    with Server(args.workdir, *flags, timeout=1200) as server:
        url = f"{server.model_url}:generate"
        for _ in range(3):  # warm the HTTP path and the batch-1 shapes
            stream_once(url, {"prompt": prompts[0], "max_new_tokens": args.new_tokens,
                              "stream": True})  # fmt: skip
        ttft = [
            stream_once(
                url,
                {
                    "prompt": prompts[i % len(prompts)],
                    "max_new_tokens": args.new_tokens,
                    "stream": True,
                },
            )  # fmt: skip
            for i in range(args.ttft_requests)
        ]
        bodies = [
            {
                "prompt": prompts[i % len(prompts)],
                "max_new_tokens": args.new_tokens,
                "sampler": "temperature",
                "seed": i,
            }  # fmt: skip
            for i in range(args.clients * args.requests)
        ]
        load = {"before": os.getloadavg()}
        seq_wall, seq = run_requests(url, bodies, 1)
        bad_log: list = []
        bad = threading.Thread(target=send_bad, args=(url, args.bad_rounds, bad_log))
        bad.start()
        con_wall, con = run_requests(url, bodies, args.clients)
        bad.join()
        load["after"] = os.getloadavg()
        healthy = httpx.get(f"{server.url}/healthz").status_code == 200
        served = httpx.get(f"{server.model_url}/metadata").json()["metadata"]["served"]
    first = [t["first_token_s"] for t in ttft]
    sequential, concurrent = throughput_summary(seq_wall, seq), throughput_summary(con_wall, con)
    return {
        "first_token": {
            "prompt_tokens": args.prompt_tokens,
            "requests": len(ttft),
            "median_ms": 1000 * statistics.median(first),
            "p90_ms": 1000 * percentile(first, 0.9),
            "median_total_ms": 1000 * statistics.median(t["total_s"] for t in ttft),
            "tokens": [t["num_tokens"] for t in ttft],
            "raw_s": first,
        },
        "sequential": sequential,
        "concurrent": {**concurrent, "clients": args.clients},
        "throughput_ratio": concurrent["tokens_per_second"] / sequential["tokens_per_second"],
        "same_text_as_sequential": [r["completion"] for r in con] == [r["completion"] for r in seq],
        "bad_requests": {
            "sent": len(bad_log),
            "kinds": len(BAD),
            "all_4xx_as_expected": all(b["status"] == b["expected"] for b in bad_log),
            "all_one_line": all(b["one_line"] for b in bad_log),
            "examples": bad_log[: len(BAD)],
        },
        "server_healthy_after": healthy,
        "served": served,
        "loadavg": load,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--baseline_saved_model", default=None)
    parser.add_argument("--output", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sm_new_tokens", type=int, default=32)
    parser.add_argument("--prompt_tokens", type=int, default=16)
    parser.add_argument("--new_tokens", type=int, default=48)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--ttft_requests", type=int, default=20)
    parser.add_argument("--stream_chunk", type=int, default=4)
    parser.add_argument("--bad_rounds", type=int, default=3)
    parser.add_argument("--skip", choices=["saved_model", "server"], default=None)
    args = parser.parse_args()

    from tfllm.data.tokenizer_kinds import load_tokenizer
    from tfllm.utils.machine import cpu_model

    tokenizer = load_tokenizer(os.path.join(args.workdir, "tokenizer"))
    prompts = sst2_prompts(tokenizer, 8, args.prompt_tokens)
    from importlib.metadata import version

    record = {
        "command": " ".join(sys.argv),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "versions": {
            p: version(p)
            for p in ("tensorflow", "keras", "starlette", "uvicorn", "sse-starlette", "httpx")
        },  # fmt: skip
        "loadavg_start": os.getloadavg(),
        "prompts": prompts,
    }
    if args.skip != "saved_model":
        record["saved_model"] = bench_saved_model(args, prompts)
        print(json.dumps(record["saved_model"]["median_tokens_per_second"]), flush=True)
    if args.skip != "server":
        record["server"] = bench_server(args, prompts)
        print(json.dumps({k: record["server"][k] for k in ("throughput_ratio",)}), flush=True)
    record["loadavg_end"] = os.getloadavg()
    tmp = args.output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

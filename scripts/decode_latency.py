"""Per-token KV-cache decode latency of a trained workdir, graph vs XLA loop.

Usage: python scripts/decode_latency.py [WORKDIR]   (default runs/shakespeare)
Batch 1, an 8-token prompt, 100 new tokens, median of 7 runs after a warm-up;
the time includes the prefill. Results are recorded in docs/results.md.
"""

import statistics
import sys
import time

from tfllm.inference.generate import Generator
from tfllm.inference.loading import load_trained

workdir = sys.argv[1] if len(sys.argv) > 1 else "runs/shakespeare"
t = load_trained(workdir)
ids = t.tokenizer.encode("First Citizen:\nBefore we proceed")[:8]
for xla in (False, True):
    g = Generator(t.model, use_xla=xla)
    for sampler, kw in (("greedy", {}), ("top_p", dict(top_p=0.9, temperature=0.8))):
        g.generate(ids, 100, sampler=sampler, **kw)  # trace / compile
        times = []
        for s in range(7):
            t0 = time.perf_counter()
            g.generate(ids, 100, sampler=sampler, seed=s, **kw)
            times.append(time.perf_counter() - t0)
        per_token = statistics.median(times) / 100 * 1e3
        print(f"xla={xla} {sampler}: median {per_token:.2f} ms/token (incl. prefill)")

"""The pipelines' compression stage: prune the trained model, export it like the dense one.

Both pipelines prune their model with `tfllm-compress`'s library call (tfmot
schedule and mask engine, attention included) into `W/compressed/prune<NN>/`,
export that workdir's LiteRT file in the same quantize mode as the dense one,
and report the two side by side. A classifier is pruned to 80%; a language
model to 50%, because a short fine-tune cannot repair 80% of a small LM's
weights (docs/compression.md measures it: +69% perplexity after 400 steps on
the quickstart GPT, where 50% costs nothing). The full trade-off table is
`python -m tfllm.compress.study`; a pipeline run shows one row, cheaply.
"""

from __future__ import annotations

import os

import ml_collections

from tfllm.pipeline.common import EDGE_QUANTIZE, discard_stale, edge_dir, export_edge
from tfllm.pipeline.stamps import Stamp, checkpoint_identity
from tfllm.utils.io import read_json

CLASSIFIER_SPARSITY = 0.8
LM_SPARSITY = 0.5


def sparsity(config: ml_collections.ConfigDict) -> float:
    return LM_SPARSITY if config.model.name == "gpt" else CLASSIFIER_SPARSITY


def pruned_dir(workdir: str, config: ml_collections.ConfigDict) -> str:
    return os.path.join(workdir, "compressed", f"prune{round(sparsity(config) * 100)}")


def prune_steps(config: ml_collections.ConfigDict) -> int:
    """A tenth of the training run: enough for the ramp plus some recovery."""
    return max(20, int(config.train.num_steps) // 10)


def done(workdir: str, config: ml_collections.ConfigDict) -> bool:
    return os.path.isfile(os.path.join(edge_dir(pruned_dir(workdir, config)), "verification.json"))


def stamp(workdir: str, config: ml_collections.ConfigDict, **extra: object) -> Stamp:
    """What the stage's output is made from: the dense checkpoint, the pruning
    settings, and the export settings its LiteRT file is written with."""
    settings = {"sparsity": sparsity(config), "steps": prune_steps(config), **extra}
    return Stamp(
        {"pruning": settings, "config.export": config.export, "quantize": EDGE_QUANTIZE},
        {"checkpoint": checkpoint_identity(workdir)},
    )


def run_compress_stage(
    workdir: str, config: ml_collections.ConfigDict, stale: str | None = None
) -> str:
    """Prunes and exports; `stale` (why the last pruned model is out of date) starts
    the pruned workdir afresh instead of resuming it."""
    from tfllm.compress.run import CompressOptions, check_output, compress_config, compress_workdir

    out = pruned_dir(workdir, config)
    discard_stale(out, stale)
    options = CompressOptions(method="prune", sparsity=sparsity(config), steps=prune_steps(config))
    check_output(workdir, out, compress_config(workdir, options))
    record = compress_workdir(workdir, out, options)
    export_edge(out)
    edge = read_json(os.path.join(edge_dir(out), "verification.json"))
    dense = read_json(os.path.join(edge_dir(workdir), "verification.json"))
    ratio = edge["gzip_bytes"] / dense["gzip_bytes"] if dense else float("nan")
    return f"(sparsity {record['sparsity']:.2f}, gzip {ratio:.2f}× the dense {EDGE_QUANTIZE} file)"


def compression_lines(workdir: str, config: ml_collections.ConfigDict) -> list[str]:
    """The report's table: dense vs pruned, both as the LiteRT file that ships."""
    target = sparsity(config)
    out = pruned_dir(workdir, config)
    record = read_json(os.path.join(out, "compression.json"))
    dense = read_json(os.path.join(edge_dir(workdir), "verification.json"))
    pruned = read_json(os.path.join(edge_dir(out), "verification.json"))
    if not (record and dense and pruned):
        return []
    lm = "perplexity" in pruned
    metric = "perplexity" if lm else "accuracy"

    def value(v: dict) -> str:
        return f"{v[metric]:.3f}" if lm else f"{v[metric] * 100:.2f}%"

    lines = [
        "## Compression",
        "",
        f"Pruned to {target:.0%} with `tfllm-compress --method=prune` "
        f"({record['steps']} fine-tuning steps; every Dense, attention EinsumDense, Conv1D "
        f"and embedding kernel) into `{out}`; both files are LiteRT `{EDGE_QUANTIZE}` exports, "
        f"scored on the verification {'windows' if lm else 'rows'}. The full trade-off table "
        "(50/80/90%, 2:4, PTQ, QAT, distillation) is in docs/compression.md.",
        "",
        f"| model | {metric} (LiteRT) | file bytes | gzip bytes | × dense (gzip) | "
        "non-zero kernel weights |",
        "|---|---|---|---|---|---|",
        f"| dense | {value(dense)} | {dense['size_bytes']:,} | {dense['gzip_bytes']:,} | 1.00 "
        "| 100% |",
        f"| pruned {target:.0%} | {value(pruned)} | {pruned['size_bytes']:,} | "
        f"{pruned['gzip_bytes']:,} | {pruned['gzip_bytes'] / dense['gzip_bytes']:.2f} | "
        f"{(1 - record['sparsity']) * 100:.1f}% |",
        "",
        "```",
        f"tfllm-compress --workdir={workdir} --method=prune --sparsity={target} "
        f"--steps={record['steps']} --output={out}",
        f"tfllm-export --workdir={out} --format=tflite --quantize={EDGE_QUANTIZE}",
        "```",
        "",
    ]
    return lines

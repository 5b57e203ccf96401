"""The journey's report: W/report.md, its plots, W/results.json and W/report.html.

Everything is read back from the parts' own files (metrics.json,
verification.json, compression.json, benchmarks.json), never from memory, so
a report rebuilt after a resume shows the same numbers as the first one.
This module assembles the page; journey_sections writes each section,
journey_plots its PNGs, html_report the self-contained HTML.
"""

from __future__ import annotations

import os
import platform

import ml_collections

from tfllm.pipeline.common import (
    EDGE_QUANTIZE,
    PipelineRun,
    environment_lines,
    journey_heading,
    stage_lines,
)
from tfllm.pipeline.html_report import write_html_report
from tfllm.pipeline.journey_layout import part_dir
from tfllm.pipeline.journey_results import classifier_variants, read_part
from tfllm.pipeline.journey_sections import (
    classifier_section,
    compression_section,
    corpus_name,
    fmt_num,
    fmt_pct,
    lm_section,
    reproduce_lines,
    speed_section,
)
from tfllm.utils.io import atomic_write_json, atomic_write_text, read_json


def write_journey_report(
    run: PipelineRun, journey: ml_collections.ConfigDict, configs: dict, path: str
) -> str:
    """Writes report.md (+ PNGs), results.json and report.html; returns the stage detail."""
    workdir = run.workdir
    variants = classifier_variants(workdir, configs)
    lm_lines, lm_results = lm_section(workdir, configs["lm"])
    classifier_lines, classifier_results = classifier_section(variants, workdir)
    _, lm_edge = read_part(part_dir(workdir, "lm"))
    best = max(
        classifier_results.items(),
        key=lambda kv: kv[1]["test_accuracy"] or -1.0,
        default=("n/a", {"test_accuracy": None}),
    )
    lines = journey_heading("tfllm pipeline report", run, journey.profile)
    lines += [
        f"| GPT held-out perplexity ({corpus_name(configs['lm'])}) "
        f"| {fmt_num(lm_results['perplexity'], '.2f')} |",
        f"| best SST-2 test accuracy | {fmt_pct(best[1]['test_accuracy'])} ({best[0]}) |",
        f"| exports verified | SavedModel (strings in, text/probabilities out) and LiteRT "
        f"`{EDGE_QUANTIZE}` for every model |",
        "",
    ]
    lines += lm_lines + classifier_lines
    lines += compression_section(variants, workdir, configs["lm"])
    lines += speed_section(workdir, variants, lm_edge)
    lines += stage_lines(run.results) + [""]
    lines += reproduce_lines(workdir, journey, configs)
    lines += environment_lines()
    atomic_write_text(path, "\n".join(lines))
    atomic_write_json(
        os.path.join(workdir, "results.json"),
        {
            "profile": journey.profile,
            "language_model": lm_results,
            "classifiers": classifier_results,
            "benchmark": {
                k: v
                for k, v in read_json(os.path.join(workdir, "benchmark", "benchmarks.json")).items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            },
            "stages": {r.name: round(r.seconds, 1) for r in run.results if not r.skipped},
            "machine": platform.platform(),
        },
    )
    html_path = write_html_report(path)
    return f"({path}, {html_path})"

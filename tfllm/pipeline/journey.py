"""The journey: every tfllm capability in one resumable run, then one report.

  lm.*           GPT on SST-2's sentences (no labels): tokenizer, pretrain,
                 perplexity, samples, SavedModel, LiteRT, pruned 50%  → W/lm/
  transformer.*  transformer classifier fine-tuned from lm/ on SST-2, scored on
                 the test split, exported, pruned 80%       → W/classifiers/transformer/
  cnn.*, mlp.*   the baselines, trained from scratch        → W/classifiers/{cnn,mlp}/
  distil         a small transformer distilled from the fine-tuned one → W/distil/
  benchmark      tfllm-benchmark at the LM's dims, against keras-hub → W/benchmark/
  report         W/report.md, its PNGs and a self-contained W/report.html

Each part is a plain tfllm workdir written by the same library calls as
`tfllm-train`, `tfllm-evaluate`, `tfllm-export`, `tfllm-compress` and
`tfllm-benchmark`, so every number in the report can be redone with the
command the report prints beside it. A stage is skipped when its output exists
and was made from the current config and upstream checkpoint (recorded in
W/.pipeline/stamps.json; tfllm.pipeline.stamps), otherwise it re-runs and says
why; training resumes from its checkpoints; `--force=STAGE` redoes a stage.
"""

from __future__ import annotations

import copy
import os

import ml_collections

from tfllm.pipeline import classifier_pipeline, lm_pipeline
from tfllm.pipeline.common import PipelineRun, discard_stale, edge_dir, export_edge
from tfllm.pipeline.journey_layout import (  # re-exported: the journey's public names
    CLASSIFIER_PARTS,
    FINETUNED,
    benchmark_command,
    part_dir,
)
from tfllm.pipeline.journey_report import write_journey_report
from tfllm.pipeline.stamps import Stamp, checkpoint_identity
from tfllm.utils.io import atomic_write_json

# Baselines skip pruning: it would double their cost and the transformer's row
# already shows what pruning does to a classifier.
_CLASSIFIER_STAGES = {
    "transformer": classifier_pipeline.WORK_STAGES,
    "cnn": ("train", "evaluate", "export", "tflite"),
    "mlp": ("train", "evaluate", "export", "tflite"),
}
STAGES = (
    *(f"lm.{s}" for s in lm_pipeline.WORK_STAGES),
    *(f"{part}.{s}" for part in CLASSIFIER_PARTS for s in _CLASSIFIER_STAGES[part]),
    "distil",
    "benchmark",
    "report",
)
# Seconds each stage took in the quick profile on the 2-core reference machine
# (docs/pipeline.md); training stages scale with their step counts. Only used
# for the ETA, which is rescaled by how fast this machine turns out to be.
_QUICK_SECONDS = {
    "lm.train": 218.0,
    "lm.evaluate": 5.0,
    "lm.samples": 7.0,
    "lm.export": 17.0,
    "lm.tflite": 15.0,
    "lm.compress": 47.0,
    "transformer.train": 64.0,
    "transformer.evaluate": 2.0,
    "transformer.export": 4.0,
    "transformer.tflite": 7.0,
    "transformer.compress": 50.0,
    "cnn.train": 25.0,
    "cnn.evaluate": 1.0,
    "cnn.export": 1.0,
    "cnn.tflite": 2.0,
    "mlp.train": 13.0,
    "mlp.evaluate": 1.0,
    "mlp.export": 1.0,
    "mlp.tflite": 1.0,
    "distil": 26.0,
    "benchmark": 49.0,
    "report": 1.0,
}
_QUICK_STEPS = {"lm": 500, "transformer": 400, "cnn": 800, "mlp": 800, "distil": 300}


def is_journey_config(config: ml_collections.ConfigDict) -> bool:
    """A journey config has parts (`lm`, …), not a `model` of its own."""
    return "lm" in config and "model" not in config


def part_configs(
    journey: ml_collections.ConfigDict, workdir: str
) -> dict[str, ml_collections.ConfigDict]:
    """Each part's complete, validated tfllm config (the fine-tune pointed at lm/)."""
    from tfllm.config import base_config, validate
    from tfllm.errors import ConfigError

    configs = {}
    for part in ("lm", *CLASSIFIER_PARTS):
        config = base_config()
        config.update(copy.deepcopy(journey[part]))
        if part == FINETUNED:
            config.train.init_from = part_dir(workdir, "lm")
        try:
            validate(config)
        except ConfigError as e:  # name the key as the command line spells it
            raise ConfigError(str(e).replace("config.", f"config.{part}.")) from None
        configs[part] = config
    student = base_config()
    student.update(copy.deepcopy(journey.distil.student))
    try:  # checked now, not after the parts it distils from have trained
        validate(student)
    except ConfigError as e:
        raise ConfigError(str(e).replace("config.", "config.distil.student.")) from None
    return configs


def stage_estimates(journey: ml_collections.ConfigDict) -> dict[str, float]:
    """`_QUICK_SECONDS` with training stages scaled to this journey's step counts."""
    steps = {p: int(journey[p].train.num_steps) for p in ("lm", *CLASSIFIER_PARTS)}
    steps["distil"] = int(journey.distil.student.train.num_steps)
    estimates = dict(_QUICK_SECONDS)
    for part, n in steps.items():
        key = "distil" if part == "distil" else f"{part}.train"
        estimates[key] *= n / _QUICK_STEPS[part]
    return estimates


def run_journey(journey: ml_collections.ConfigDict, workdir: str, force: set[str]) -> str:
    """Runs every stage; returns the path of report.md."""
    os.makedirs(workdir, exist_ok=True)
    configs = part_configs(journey, workdir)
    atomic_write_json(os.path.join(workdir, "pipeline_config.json"), journey.to_dict())
    run = PipelineRun(journey, workdir, force, stages=STAGES, estimates=stage_estimates(journey))
    lm_pipeline.run_lm_stages(run, configs["lm"], part_dir(workdir, "lm"), prefix="lm.")
    for part in CLASSIFIER_PARTS:
        classifier_pipeline.run_classifier_stages(
            run,
            configs[part],
            part_dir(workdir, part),
            prefix=f"{part}.",
            stages=_CLASSIFIER_STAGES[part],
            test_pruned=part == FINETUNED,
        )
    student = part_dir(workdir, "distil")
    teacher = {"transformer checkpoint": checkpoint_identity(part_dir(workdir, FINETUNED))}
    distilled = Stamp({"config.distil": journey.distil}, teacher)

    def distil() -> str:
        discard_stale(student, run.stale("distil", distilled))  # not resumed from an old one
        return distil_into(part_dir(workdir, FINETUNED), student, journey.distil)

    run.stage("distil", distil_done(student), distil, distilled)
    bench_path = os.path.join(workdir, "benchmark", "benchmarks.json")
    run.stage(
        "benchmark",
        os.path.isfile(bench_path),
        lambda: _benchmark(journey, configs["lm"], bench_path),
        # It measures the LM's shape, not its checkpoint: the command says it all.
        Stamp({"benchmark settings": benchmark_command(journey, configs["lm"], "")}),
    )
    report = os.path.join(workdir, "report.md")
    run.stage("report", False, lambda: write_journey_report(run, journey, configs, report))
    return report


def distil_done(student: str) -> bool:
    """The distilled student has a test score and a verified LiteRT export."""
    return classifier_pipeline.tested(student) and os.path.isfile(
        os.path.join(edge_dir(student), "verification.json")
    )


def distil_into(teacher: str, student: str, distil: ml_collections.ConfigDict) -> str:
    """`tfllm-compress --method=distill` from the `teacher` workdir into `student`,
    then the student's test score and verified LiteRT export. `distil` holds the
    student config, temperature, alpha and (optionally) student_embeddings."""
    from tfllm.compress.run import CompressOptions, compress_workdir

    student_config = copy.deepcopy(distil.student)
    options = CompressOptions(
        method="distill",
        steps=int(student_config.train.num_steps),
        learning_rate=float(student_config.train.learning_rate),
        temperature=float(distil.temperature),
        alpha=float(distil.alpha),
        student_embeddings=distil.get("student_embeddings", "random"),
        student=student_config,
    )
    record = compress_workdir(teacher, student, options)
    detail = classifier_pipeline.evaluate_test_split(student)
    edge = export_edge(student)
    return (
        f"({record['num_params']:,} parameters vs the teacher's {record['teacher_params']:,}; "
        f"{detail.strip('()')}; LiteRT {edge['size_bytes'] / 1e6:.2f} MB)"
    )


def _benchmark(
    journey: ml_collections.ConfigDict, lm_config: ml_collections.ConfigDict, path: str
) -> str:
    """`tfllm-benchmark --mode=all --peer=keras_hub` at the journey LM's dimensions."""
    from tfllm.benchmark.runner import BenchSettings, run_benchmark

    b = journey.benchmark
    settings = BenchSettings(
        mode="all",
        peer=b.peer,
        steps=int(b.steps),
        warmup=int(b.warmup),
        repeats=int(b.repeats),
        decode_batch=int(b.decode_batch),
        decode_prompt_len=int(b.decode_prompt_len),
        decode_new_tokens=int(b.decode_new_tokens),
    )
    result = run_benchmark(lm_config, settings)
    result["command"] = benchmark_command(journey, lm_config, path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_json(path, result)
    line = f"({result['train_tokens_per_second']:,.0f} train tokens/s, MFU {result['mfu']:.2f}"
    if "train_speedup_vs_keras_hub" in result:
        line += (
            f", {result['train_speedup_vs_keras_hub']:.2f}× keras-hub train, "
            f"{_decode_headline(result):.2f}× keras-hub decode (its faster variant)"
        )
    return line + ")"


def _decode_headline(result: dict) -> float:
    """Ours / the faster keras-hub variant (results written before that key: the
    smaller of the two ratios, which is the same thing)."""
    if "decode_speedup_headline" in result:
        return float(result["decode_speedup_headline"])
    ratios = [result[k] for k in ("decode_speedup_vs_keras_hub", "decode_speedup_vs_keras_hub_xla")]
    return float(min(r for r in ratios if r is not None))

"""The pretrained journey (`tfllm-pipeline --profile=pretrained`): published models,
fine-tuned on this machine, exported and reported.

  import.*     the fetched all-MiniLM-L6-v2 and SmolLM2-135M-Instruct GGUF,
               as `tfllm-import` writes them              → W/imported/{minilm,smollm2}/
  minilm.*     a classifier on the imported MiniLM, fine-tuned on SST-2, scored on
               the test split, SavedModel + LiteRT exports verified → W/minilm_sst2/
  distil       the Kim CNN distilled from it, starting from the teacher's token
               table; test score and verified LiteRT export    → W/cnn_student/
  smollm2.*    baseline: the imported model's held-out Tiny Shakespeare perplexity;
               train: LoRA fine-tune; evaluate: the same perplexity after it;
               samples: generated text                          → W/smollm2_lora/
  report       W/report.md, W/report.html, W/results.json

Each part is the workdir the documented commands write (tfllm-import,
tfllm-train, tfllm-evaluate, tfllm-export, tfllm-compress), resumable and
skipped when up to date exactly as in the default journey (tfllm.pipeline.journey).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil

import ml_collections

from tfllm.pipeline import classifier_pipeline, lm_pipeline
from tfllm.pipeline.common import PipelineRun, discard_stale
from tfllm.pipeline.journey import distil_done, distil_into
from tfllm.pipeline.pretrained_config import PRETRAINED_PROFILE
from tfllm.pipeline.pretrained_layout import BASELINE_FILE, layout, sources
from tfllm.pipeline.stamps import Stamp, checkpoint_identity
from tfllm.utils.io import atomic_write_json

STAGES = (
    "import.minilm",
    "import.smollm2",
    *(f"minilm.{s}" for s in ("train", "evaluate", "export", "tflite")),
    "distil",
    *(f"smollm2.{s}" for s in ("baseline", "train", "evaluate", "samples")),
    "report",
)
# Seconds per stage in the measured run on the 2-core reference machine
# (docs/pipeline.md); only for the ETA, which is rescaled by this machine's pace.
_ESTIMATES = {
    "import.minilm": 4.0,
    "import.smollm2": 16.0,
    "minilm.train": 315.0,
    "minilm.evaluate": 6.0,
    "minilm.export": 12.0,
    "minilm.tflite": 30.0,
    "distil": 311.0,
    "smollm2.baseline": 96.0,
    "smollm2.train": 890.0,
    "smollm2.evaluate": 48.0,
    "smollm2.samples": 48.0,
    "report": 1.0,
}
_SAMPLES = ("train", "evaluate", "samples")  # the LM stages run_lm_stages runs here


def is_pretrained_journey(config: ml_collections.ConfigDict) -> bool:
    return config.get("profile") == PRETRAINED_PROFILE and "minilm" in config


def part_configs(
    journey: ml_collections.ConfigDict, workdir: str
) -> dict[str, ml_collections.ConfigDict]:
    """The MiniLM and student configs, validated; the SmolLM2 overrides checked against
    the schema (its whole config exists once the import has written one)."""
    from tfllm.config import base_config

    paths = layout(workdir)
    minilm = base_config()
    minilm.update(copy.deepcopy(journey.minilm))
    minilm.train.init_from = paths["minilm_import"]
    student = base_config()
    student.update(copy.deepcopy(journey.distil.student))
    smollm2 = base_config()
    smollm2.model.name = "llama"
    smollm2.update(copy.deepcopy(journey.smollm2))
    for label, config in (("minilm", minilm), ("distil.student", student), ("smollm2", smollm2)):
        _validate(config, label)
    return {"minilm": minilm, "student": student}


def _validate(config: ml_collections.ConfigDict, label: str) -> None:
    from tfllm.config import validate
    from tfllm.errors import ConfigError

    try:
        validate(config)
    except ConfigError as e:  # name the key as the command line spells it
        raise ConfigError(str(e).replace("config.", f"config.{label}.")) from None


def smollm2_config(journey: ml_collections.ConfigDict, import_dir: str):
    """The imported SmolLM2's config.json with the journey's overrides, fine-tuned from it."""
    from tfllm.config import load_workdir_config

    config = load_workdir_config(import_dir)
    config.update(copy.deepcopy(journey.smollm2))
    config.train.init_from = import_dir
    _validate(config, "smollm2")
    return config


def run_pretrained_journey(
    journey: ml_collections.ConfigDict, workdir: str, force: set[str]
) -> str:
    """Runs every stage; returns the path of report.md."""
    from tfllm.pipeline.pretrained_report import write_pretrained_report

    files = sources(journey)  # checked before any work, like every part's config
    configs = part_configs(journey, workdir)
    paths = layout(workdir)
    os.makedirs(workdir, exist_ok=True)
    atomic_write_json(os.path.join(workdir, "pipeline_config.json"), journey.to_dict())
    run = PipelineRun(journey, workdir, force, stages=STAGES, estimates=_ESTIMATES)
    _import_stage(run, "import.minilm", files["minilm"], paths["minilm_import"])
    _import_stage(run, "import.smollm2", files["smollm2"], paths["smollm2_import"])
    lm = smollm2_config(journey, paths["smollm2_import"])  # checked before the long stages

    classifier_pipeline.run_classifier_stages(
        run, configs["minilm"], paths["minilm"], prefix="minilm.",
        stages=("train", "evaluate", "export", "tflite"),
    )  # fmt: skip
    distil = _student_matching_teacher(journey.distil, paths["minilm"])
    teacher = {"teacher checkpoint": checkpoint_identity(paths["minilm"])}
    distilled = Stamp({"config.distil": distil}, teacher)

    def run_distil() -> str:
        discard_stale(paths["student"], run.stale("distil", distilled))
        return distil_into(paths["minilm"], paths["student"], distil)

    run.stage("distil", distil_done(paths["student"]), run_distil, distilled)

    baseline_path = os.path.join(paths["smollm2"], BASELINE_FILE)
    run.stage(
        "smollm2.baseline",
        os.path.isfile(baseline_path),
        lambda: _baseline(paths["smollm2_import"], lm, baseline_path),
        Stamp(
            {"config.data": lm.data, "context": lm.model.max_length},
            {"imported checkpoint": checkpoint_identity(paths["smollm2_import"])},
        ),
    )
    lm_pipeline.run_lm_stages(run, lm, paths["smollm2"], prefix="smollm2.", stages=_SAMPLES)

    report = os.path.join(workdir, "report.md")
    run.stage("report", False, lambda: write_pretrained_report(run, journey, lm, report))
    return report


def _import_stage(run: PipelineRun, name: str, source: str, target: str) -> None:
    """`tfllm-import --source=SOURCE --workdir=TARGET`, redone when the source changed."""
    from tfllm.pipeline.stamps import file_identity

    stamp = Stamp({"source": file_identity(source)})

    def do_import() -> str:
        from tfllm.pretrained.importer import import_checkpoint

        if os.path.isdir(target):  # an import of another file: the importer wants a new dir
            print(f"Discarding {target}: {run.stale(name, stamp)}", flush=True)
            shutil.rmtree(target)
        report = import_checkpoint(source, target)
        return (
            f"({report.family}, {report.format}, {report.num_params:,} parameters, "
            f"vocabulary {report.vocab_size:,}, peak RSS {report.peak_rss_mb:,.0f} MB)"
        )

    done = os.path.isfile(os.path.join(target, "import.json"))
    run.stage(name, done, do_import, stamp)


def _student_matching_teacher(distil: ml_collections.ConfigDict, teacher_dir: str):
    """The distillation settings with the student fitted to the trained teacher: rows
    no longer than the teacher reads (it scores the student's inputs), and, when the
    student starts from the teacher's token table, embeddings as wide as the
    teacher's hidden state (MiniLM's 384; another encoder's 768)."""
    from tfllm.config import load_workdir_config

    distil = copy.deepcopy(distil)
    if not os.path.isfile(os.path.join(teacher_dir, "config.json")):
        return distil  # not trained yet: the stage that needs this runs after training
    teacher = load_workdir_config(teacher_dir).model
    fitted = {"max_length": min(int(distil.student.model.max_length), int(teacher.max_length))}
    if distil.student_embeddings == "teacher":
        fitted["embedding_dim"] = int(teacher.hidden_dim)
    for key, value in fitted.items():
        if int(distil.student.model[key]) != value:
            print(f"distil: student {key} {distil.student.model[key]} → {value} (the teacher's)")
            distil.student.model[key] = value
    return distil


def _baseline(import_dir: str, config: ml_collections.ConfigDict, path: str) -> str:
    """The imported model's perplexity on the tokens the fine-tune holds out: the
    same split, context and batches `smollm2.evaluate` scores after it."""
    from tfllm.evaluation.workdir import evaluate_workdir
    from tfllm.inference.loading import load_trained

    trained = dataclasses.replace(load_trained(import_dir), config=config)
    result = evaluate_workdir(trained, split="eval", write_png=False).metrics
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_json(
        path,
        {
            "perplexity": float(result["perplexity"]),
            "loss": float(result["loss"]),
            "tokens": int(result["tokens"]),
            "context": int(config.model.max_length),
            "model": import_dir,
            "checkpoint": checkpoint_identity(import_dir)["checkpoint"],
        },
    )
    return f"(perplexity {result['perplexity']:.2f} on {result['tokens']:,} held-out tokens)"

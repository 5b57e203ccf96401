"""What the LM and classifier pipelines share: resumable stages, the curve plot,
and the report's command/stages/environment sections.

Kept in one place so both journeys skip, time and report their stages the same
way; each pipeline module only knows its own stages and results.
"""

from __future__ import annotations

import copy
import os
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import ml_collections

from tfllm.config import PRETRAINED_CLASSIFIERS
from tfllm.pipeline.stamps import (
    Stamp,
    StampStore,
    checkpoint_identity,
    latest_checkpoint_name,
    stale_reason,
)
from tfllm.utils.io import read_json

# The TFLite mode both pipelines export (docs/edge.md: ~0.25-0.4x the float file,
# no measurable accuracy or perplexity cost, fastest on CPU).
EDGE_QUANTIZE = "dynamic"


def edge_dir(workdir: str) -> str:
    """`W/export/tflite_dynamic`: where the pipelines' TFLite stage writes."""
    from tfllm.export.litert import tflite_dir  # TensorFlow loads only when needed

    return tflite_dir(workdir, EDGE_QUANTIZE)


# Eval rows a classifier's exports are checked on (tfllm-export's default).
VERIFY_EXAMPLES = 256


def export_edge(workdir: str) -> dict:
    """The pipelines' verified LiteRT export (`EDGE_QUANTIZE`) of a workdir; its record.

    What `tfllm-export --format=tflite --quantize=dynamic` does, for either
    model kind: the dense model's tflite stage and the compress stage's pruned
    model go through this one call, so their files are comparable.
    """
    from tfllm.export.workdir import export_workdir  # TensorFlow loads only when needed

    # Verified on tfllm-export's defaults: VERIFY_EXAMPLES eval rows, or the LM's windows.
    return export_workdir(workdir, "tflite", EDGE_QUANTIZE).record


@dataclass
class StageResult:
    name: str
    seconds: float
    skipped: bool
    detail: str = ""
    rerun: str = ""  # why a stage whose output existed was made again


def format_duration(seconds: float) -> str:
    """`75` → `1m15s`: progress lines are read by people, not parsed."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass
class PipelineRun:
    """One pipeline invocation: runs stages in order, prints [i/N] progress, keeps timings.

    `stages` is the pipeline's own stage list, so the [i/N] prefix counts only
    the stages that pipeline has. `estimates` (nominal seconds per stage, from
    measured runs) turn into an ETA: the remaining estimates, scaled by how
    fast this machine has run the stages so far compared with their estimates.

    A stage with a `Stamp` is up to date only when its output exists and the
    stamp recorded when it last completed (`W/.pipeline/stamps.json`, see
    `tfllm.pipeline.stamps`) equals the one it would have now.
    """

    config: ml_collections.ConfigDict
    workdir: str
    force: set[str] = field(default_factory=set)
    results: list[StageResult] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    stages: Sequence[str] = ()
    estimates: dict[str, float] = field(default_factory=dict)
    _stamps: StampStore | None = field(default=None, repr=False)

    @property
    def stamps(self) -> StampStore:
        if self._stamps is None:
            self._stamps = StampStore(self.workdir)
        return self._stamps

    def stale(self, name: str, stamp: Stamp) -> str | None:
        """Why stage `name`'s existing output is not what `stamp` would make (None: current)."""
        return stale_reason(self.stamps.get(name), stamp)

    def record(self, name: str, stamp: Stamp) -> None:
        """Files `stamp` as what stage `name`'s output was just made from."""
        self.stamps.put(name, stamp)

    def eta(self, name: str) -> float | None:
        """Seconds left from the start of stage `name` to the end, or None without estimates."""
        if not self.estimates:
            return None
        ran = [r for r in self.results if not r.skipped and self.estimates.get(r.name)]
        expected = sum(self.estimates[r.name] for r in ran)
        # Clamped: one stage that ran far off its estimate must not swing the ETA wildly.
        pace = min(4.0, max(0.25, sum(r.seconds for r in ran) / expected)) if expected else 1.0
        remaining = list(self.stages)[list(self.stages).index(name) :]
        return pace * sum(self.estimates.get(s, 0.0) for s in remaining)

    def stage(
        self, name: str, done: bool, fn: Callable[[], str], stamp: Stamp | None = None
    ) -> None:
        """Runs stage `name` unless it is up to date.

        Up to date: `done` (its output exists) and, when the stage has a
        `stamp` (the config values and upstream checkpoint it would use now),
        the stamp recorded when it last completed is the same. A stage that
        runs has its stamp recorded once `fn` returns.
        """
        index = list(self.stages).index(name) + 1
        total = len(self.stages)
        elapsed = time.time() - self.started
        rerun = ""
        if done and name not in self.force:
            rerun = (stamp is not None and self.stale(name, stamp)) or ""
            if not rerun:
                print(
                    f"[{index}/{total}] {name}: already done, skipping (--force={name} to redo)",
                    flush=True,
                )
                self.results.append(StageResult(name, 0.0, True))
                return
        eta = self.eta(name)
        timing = f"elapsed {format_duration(elapsed)}"
        if eta is not None:
            timing += f", ETA {format_duration(eta)}"
        if rerun:
            print(f"\n[{index}/{total}] re-running {name}: {rerun} ({timing})", flush=True)
        else:
            print(f"\n[{index}/{total}] {name} ({timing})", flush=True)
        t0 = time.time()
        detail = fn()
        if stamp is not None:
            self.record(name, stamp)
        self.results.append(StageResult(name, time.time() - t0, False, detail, rerun))
        print(
            f"[{index}/{total}] {name}: done in {format_duration(time.time() - t0)} {detail}",
            flush=True,
        )

    def part(self, prefix: str, stages: Sequence[str]) -> Callable[..., None]:
        """`stage` for one part of a larger pipeline (the journey's `lm.*`, `cnn.*`, ...).

        The part names its stages without the prefix; only those in `stages`
        run, so a part can leave a stage to the pipeline around it.
        """

        def stage(name: str, done: bool, fn: Callable[[], str], stamp: Stamp | None = None):
            if name in stages:
                self.stage(prefix + name, done, fn, stamp)

        return stage


def discard_stale(path: str, why: str | None) -> None:
    """Removes a workdir the pipeline derived (a pruned model, a distilled student)
    before it is made again from a changed source: `tfllm-compress` resumes an
    existing output, which would hand back the old model. `why` None: keep it."""
    if why and os.path.isdir(path):
        print(f"Discarding {path}: {why}", flush=True)
        shutil.rmtree(path)


def training_done(config: ml_collections.ConfigDict, metrics: dict) -> bool:
    """Training is finished when it reached num_steps or stopped early at its last step."""
    step = metrics.get("step", 0)
    return step >= int(config.train.num_steps) or metrics.get("early_stopped_at") == step


# The sections a trained model is made of: a change to any key (tokenizer.path
# aside, which only names where a tokenizer was copied from) means another model.
_TRAINED_SECTIONS = ("model", "data", "tokenizer")


def trained_config_mismatch(config: ml_collections.ConfigDict, workdir: str) -> str | None:
    """`model.dropout: 0.1 there, 0.3 now`: the first model/data/tokenizer key of
    `config` that differs from the `config.json` the workdir was trained with
    (None when they agree, or nothing was trained there)."""
    saved = read_json(os.path.join(workdir, "config.json"))
    if not saved:
        return None
    if config.train.get("init_from") and config.model.name in (
        "transformer_classifier",
        *PRETRAINED_CLASSIFIERS,
    ):
        from tfllm.training.run import adopt_backbone_architecture

        config = copy.deepcopy(config)
        adopt_backbone_architecture(config)  # as the trainer does: the LM's shape
    for section in _TRAINED_SECTIONS:
        was = saved.get(section, {})
        for key, value in config[section].to_dict().items():
            if section == "tokenizer" and key == "path":
                continue
            before = was.get(key)
            if isinstance(value, tuple):
                value = list(value)  # JSON has no tuples
            if key in was and before != value:
                return f"{section}.{key}: {before!r} there, {value!r} now"
    return None


def train_stage(
    run: PipelineRun,
    stage: Callable[..., None],
    prefix: str,
    config: ml_collections.ConfigDict,
    workdir: str,
    fn: Callable[[], str],
) -> None:
    """The train stage both pipelines run, through `stage` (`run.part(prefix, ...)`).

    Done when training reached its last step (`training_done`) and a checkpoint
    is there. Checkpoints trained with another model/data/tokenizer config, or
    fine-tuned from an `init_from` checkpoint that has since changed, are never
    reused silently: that is a `ConfigError` naming the key and what to do (the
    pipeline never deletes a trained model itself; the trainer refuses such a
    resume too, less specifically).
    """
    from tfllm.errors import ConfigError

    name = prefix + "train"
    checkpoint = latest_checkpoint_name(workdir)
    where = os.path.join(workdir, "checkpoints")
    if checkpoint is not None:
        mismatch = trained_config_mismatch(config, workdir)
        if mismatch:
            raise ConfigError(
                f"{name}: {where} ({checkpoint}) was trained with another config "
                f"(config.{prefix}{mismatch}); the pipeline does not reuse a model for a "
                f"changed model, data or tokenizer config: use a new --workdir, or delete "
                f"{where} to retrain"
            )
    done = checkpoint is not None and training_done(
        config, read_json(os.path.join(workdir, "metrics.json"))
    )
    source = config.train.get("init_from")
    stamp = None
    if source:
        stamp = Stamp(upstream={"init_from checkpoint": checkpoint_identity(source)})
    if done and stamp is not None and run.stamps.get(name) and (why := run.stale(name, stamp)):
        raise ConfigError(
            f"{name}: {where} ({checkpoint}) was fine-tuned from an older {source} "
            f"({why}); delete {where} to fine-tune again from it, or use a new --workdir"
        )

    def train() -> str:
        detail = fn()
        if stamp is not None:
            run.record(name, stamp)
        return detail

    stage("train", done, train)


def command_line(program: str | None = None) -> str:
    """This process's command line, shell-quoted (`program` replaces argv[0]'s basename)."""
    program = program or os.path.basename(sys.argv[0])
    return " ".join(shlex.quote(a) for a in [program] + sys.argv[1:])


def plot_curves(
    history: list[dict],
    path: str,
    *,
    ylabel: str = "cross-entropy (nats/token)",
    eval_label: str = "held-out loss",
    score_keys: Sequence[tuple[str, str]] = (),
) -> bool:
    """Training and eval loss vs step → PNG; `score_keys` ((key, label), ...) found
    in the eval records (e.g. accuracy) get a second panel. False if there is no history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    if not steps:
        return False
    scores = [
        (label, [(h["step"], h[key]) for h in history if key in h]) for key, label in score_keys
    ]
    scores = [(label, points) for label, points in scores if points]
    if scores:
        fig, (ax, score_ax) = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    else:
        fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [h["loss"] for h in history], label="train loss (mean over loop)")
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", label=eval_label)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    if scores:
        for label, points in scores:
            score_ax.plot(*zip(*points, strict=True), "o-", label=label)
        score_ax.set_xlabel("step")
        score_ax.set_ylabel("eval score")
        score_ax.set_ylim(0.0, 1.02)
        score_ax.grid(alpha=0.3)
        score_ax.legend()
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def journey_heading(title: str, run: PipelineRun, profile: str) -> list[str]:
    """A journey report's first lines: title, workdir, profile, date, minutes run,
    and the head of its headline table (rows follow)."""
    total = sum(r.seconds for r in run.results)
    return [
        f"# {title}",
        "",
        f"Workdir `{run.workdir}` · profile **{profile}** · "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} · stages run this time: {total / 60:.1f} min",
        "",
        "| headline | value |",
        "|---|---|",
    ]


def stage_lines(results: Sequence[StageResult]) -> list[str]:
    """The report's "## Stages" table: seconds per stage, or that it was already done."""
    lines = ["## Stages", "", "| stage | seconds | |", "|---|---|---|"]
    for r in results:
        detail = "skipped (done)" if r.skipped else r.detail
        if r.rerun:
            detail = f"re-run ({r.rerun}) {detail}"
        detail = detail.replace("|", "\\|")  # a cell
        lines.append(f"| {r.name} | {r.seconds:.0f} | {detail} |")
    return lines


def environment_lines() -> list[str]:
    """The report's "## Environment" section: library versions and the machine."""
    from tfllm.export.verified import versions

    lines = ["## Environment", ""]
    lines += [f"- {k}: {v}" for k, v in versions().items()]
    lines += [f"- platform: {platform.platform()}", ""]
    return lines


def run_single_model(
    config: ml_collections.ConfigDict,
    workdir: str,
    force: set[str],
    stages: Sequence[str],
    run_stages: Callable[[PipelineRun, ml_collections.ConfigDict, str], None],
    write_report: Callable[[PipelineRun, str], str],
) -> str:
    """`tfllm-pipeline` on one model (an LM or a classifier config): its work
    stages, then `report.md` (always rewritten); returns the report's path."""
    run = PipelineRun(config, workdir, force, stages=tuple(stages))
    run_stages(run, config, workdir)
    report = os.path.join(workdir, "report.md")
    run.stage("report", False, lambda: write_report(run, report))
    return report

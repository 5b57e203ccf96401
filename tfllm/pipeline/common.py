"""What the LM and classifier pipelines share: resumable stages, the curve plot,
and the report's command/stages/environment sections.

Kept in one place so both journeys skip, time and report their stages the same
way; each pipeline module only knows its own stages and results.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import ml_collections

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
    """

    config: ml_collections.ConfigDict
    workdir: str
    force: set[str] = field(default_factory=set)
    results: list[StageResult] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    stages: Sequence[str] = ()
    estimates: dict[str, float] = field(default_factory=dict)

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

    def stage(self, name: str, done: bool, fn: Callable[[], str]) -> None:
        index = list(self.stages).index(name) + 1
        total = len(self.stages)
        elapsed = time.time() - self.started
        if done and name not in self.force:
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
        print(f"\n[{index}/{total}] {name} ({timing})", flush=True)
        t0 = time.time()
        detail = fn()
        self.results.append(StageResult(name, time.time() - t0, False, detail))
        print(
            f"[{index}/{total}] {name}: done in {format_duration(time.time() - t0)} {detail}",
            flush=True,
        )

    def part(self, prefix: str, stages: Sequence[str]) -> Callable[[str, bool, Callable], None]:
        """`stage` for one part of a larger pipeline (the journey's `lm.*`, `cnn.*`, ...).

        The part names its stages without the prefix; only those in `stages`
        run, so a part can leave a stage to the pipeline around it.
        """

        def stage(name: str, done: bool, fn: Callable[[], str]) -> None:
            if name in stages:
                self.stage(prefix + name, done, fn)

        return stage


def training_done(config: ml_collections.ConfigDict, metrics: dict) -> bool:
    """Training is finished when it reached num_steps or stopped early at its last step."""
    step = metrics.get("step", 0)
    return step >= int(config.train.num_steps) or metrics.get("early_stopped_at") == step


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


def stage_lines(results: Sequence[StageResult]) -> list[str]:
    """The report's "## Stages" table: seconds per stage, or that it was already done."""
    lines = ["## Stages", "", "| stage | seconds | |", "|---|---|---|"]
    for r in results:
        detail = "skipped (done)" if r.skipped else r.detail.replace("|", "\\|")  # a cell
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

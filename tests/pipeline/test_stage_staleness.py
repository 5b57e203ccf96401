"""A pipeline stage is up to date only when the config and the upstream checkpoint it
was made from are the ones it would use now (issue 24, item 5).

Before, a stage was skipped whenever its output file existed: a re-run with more
training steps or a changed `--config.*` paired new metrics with old samples and
exports. Now each stage records a stamp (`W/.pipeline/stamps.json`) when it
completes, and `PipelineRun.stage` re-runs it, saying why, when that differs.
"""

from __future__ import annotations

import json
import os

import ml_collections
import pytest

from tfllm.errors import ConfigError
from tfllm.pipeline.common import PipelineRun, train_stage
from tfllm.pipeline.stamps import STAMPS_FILE, Stamp, checkpoint_identity

# --- unit level: a fake stage on a fake trained workdir ------------------------------


def _write_checkpoint(workdir, name: str) -> None:
    """What a trained workdir holds for the pipeline to read: the checkpoint state file."""
    os.makedirs(os.path.join(workdir, "checkpoints"), exist_ok=True)
    with open(os.path.join(workdir, "checkpoints", "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n')


def _config(max_new_tokens: int = 12) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {"export": {"max_new_tokens": max_new_tokens, "verify_prompts": ["a"]}}
    )


def _run_export(workdir, config, capsys, force=()) -> tuple[int, str]:
    """One pipeline run of a fake `export` stage; how many times it ran and its output."""
    calls = []
    output = os.path.join(workdir, "export.txt")

    def export() -> str:
        calls.append(1)
        with open(output, "w") as f:
            f.write("made")
        return "(exported)"

    run = PipelineRun(config, str(workdir), set(force), stages=("export",))
    stamp = Stamp({"config.export": config.export}, {"checkpoint": checkpoint_identity(workdir)})
    run.stage("export", os.path.isfile(output), export, stamp)
    return len(calls), capsys.readouterr().out


def test_unchanged_stage_is_skipped_and_its_stamp_recorded(tmp_path, capsys):
    _write_checkpoint(tmp_path, "ckpt-20")
    assert _run_export(tmp_path, _config(), capsys)[0] == 1
    stamps = json.loads((tmp_path / STAMPS_FILE).read_text())["stages"]
    assert stamps["export"]["upstream"]["checkpoint"]["checkpoint"] == "ckpt-20"
    ran, out = _run_export(tmp_path, _config(), capsys)
    assert ran == 0 and "export: already done, skipping" in out, out


def test_new_upstream_checkpoint_reruns_the_stage(tmp_path, capsys):
    _write_checkpoint(tmp_path, "ckpt-20")
    _run_export(tmp_path, _config(), capsys)
    _write_checkpoint(tmp_path, "ckpt-40")  # trained further
    ran, out = _run_export(tmp_path, _config(), capsys)
    assert ran == 1, out
    assert "re-running export: checkpoint ckpt-40 ≠ ckpt-20 it was made from" in out, out
    stamps = json.loads((tmp_path / STAMPS_FILE).read_text())["stages"]
    assert stamps["export"]["upstream"]["checkpoint"]["checkpoint"] == "ckpt-40"
    assert _run_export(tmp_path, _config(), capsys)[0] == 0  # and now it is current


def test_retrained_checkpoint_with_the_same_name_reruns_the_stage(tmp_path, capsys):
    _write_checkpoint(tmp_path, "ckpt-20")
    (tmp_path / "config.json").write_text(json.dumps({"model": {"dropout": 0.0}}))
    _run_export(tmp_path, _config(), capsys)
    # Checkpoints deleted and retrained to the same step, from another config.
    (tmp_path / "config.json").write_text(json.dumps({"model": {"dropout": 0.1}}))
    ran, out = _run_export(tmp_path, _config(), capsys)
    assert ran == 1 and "checkpoint ckpt-20 was retrained with another config" in out, out


def test_changed_config_section_reruns_the_stage(tmp_path, capsys):
    _write_checkpoint(tmp_path, "ckpt-20")
    _run_export(tmp_path, _config(max_new_tokens=12), capsys)
    ran, out = _run_export(tmp_path, _config(max_new_tokens=24), capsys)
    assert ran == 1 and "re-running export: config.export changed since it was made" in out, out


def test_output_without_a_record_is_not_trusted(tmp_path, capsys):
    """A workdir from before stamps (or an output made by hand): made again, once."""
    _write_checkpoint(tmp_path, "ckpt-20")
    (tmp_path / "export.txt").write_text("made by an older tfllm")
    ran, out = _run_export(tmp_path, _config(), capsys)
    assert ran == 1 and "no record of the config and checkpoint it was made from" in out, out
    assert _run_export(tmp_path, _config(), capsys)[0] == 0


def test_force_still_redoes_an_up_to_date_stage(tmp_path, capsys):
    _write_checkpoint(tmp_path, "ckpt-20")
    _run_export(tmp_path, _config(), capsys)
    assert _run_export(tmp_path, _config(), capsys, force=("export",))[0] == 1


def test_the_report_table_says_why_a_stage_was_rerun(tmp_path, capsys):
    from tfllm.pipeline.common import stage_lines

    _write_checkpoint(tmp_path, "ckpt-20")
    _run_export(tmp_path, _config(), capsys)
    _write_checkpoint(tmp_path, "ckpt-40")
    run = PipelineRun(_config(), str(tmp_path), set(), stages=("export",))
    stamp = Stamp(
        {"config.export": _config().export}, {"checkpoint": checkpoint_identity(tmp_path)}
    )
    run.stage("export", True, lambda: "(exported)", stamp)
    assert "re-run (checkpoint ckpt-40 ≠ ckpt-20 it was made from) (exported)" in "\n".join(
        stage_lines(run.results)
    )


def _trained_config(num_steps: int = 20, dropout: float = 0.0) -> ml_collections.ConfigDict:
    from tfllm.config import base_config

    config = base_config()
    config.train.num_steps = num_steps
    config.model.dropout = dropout
    return config


def _train(tmp_path, config, capsys) -> tuple[int, str]:
    calls = []
    run = PipelineRun(config, str(tmp_path), set(), stages=("train",))
    train_stage(
        run, run.part("", ("train",)), "", config, str(tmp_path), lambda: calls.append(1) or ""
    )
    return len(calls), capsys.readouterr().out


def _finish_training(workdir, config) -> None:
    from tfllm.config import config_to_json

    _write_checkpoint(workdir, f"ckpt-{config.train.num_steps}")
    (workdir / "config.json").write_text(config_to_json(config))
    (workdir / "metrics.json").write_text(json.dumps({"step": config.train.num_steps}))


def test_training_is_done_only_with_a_checkpoint_of_the_same_model_config(tmp_path, capsys):
    _finish_training(tmp_path, _trained_config())
    assert _train(tmp_path, _trained_config(), capsys)[0] == 0
    assert _train(tmp_path, _trained_config(num_steps=40), capsys)[0] == 1  # resumes
    # A changed model config is never trained on top of the old checkpoints: one
    # clear line naming the key and what to do.
    with pytest.raises(ConfigError) as e:
        _train(tmp_path, _trained_config(dropout=0.1), capsys)
    message = str(e.value)
    assert "config.model.dropout: 0.0 there, 0.1 now" in message, message
    assert "use a new --workdir, or delete" in message and "checkpoints" in message, message
    # Deleting the checkpoints, as the message says, retrains (metrics.json stays).
    os.remove(tmp_path / "checkpoints" / "checkpoint")
    assert _train(tmp_path, _trained_config(dropout=0.1), capsys)[0] == 1


# --- end to end: the tiny LM pipeline, in process ------------------------------------

_STAGES = ("train", "evaluate", "samples", "export")


def _lm_config(corpus: str, steps: int) -> ml_collections.ConfigDict:
    from conftest import tiny_config

    config = tiny_config(corpus, steps=steps)
    config.train.eval_every = 10
    config.train.checkpoint_every = 10
    config.train.sample_tokens = 0
    config.export.verify_prompts = ["ROMEO:"]
    return config


def _run_lm(workdir: str, config, capsys) -> str:
    from tfllm.pipeline.lm_pipeline import run_lm_stages

    run = PipelineRun(config, workdir, set(), stages=_STAGES)
    run_lm_stages(run, config, workdir, stages=_STAGES)
    return capsys.readouterr().out


@pytest.mark.slow
def test_lm_pipeline_rerun_with_more_steps_remakes_samples_and_export(
    corpus_file, tmp_path, capsys
):
    workdir = str(tmp_path / "w")
    first = _run_lm(workdir, _lm_config(corpus_file, 10), capsys)
    for i, stage in enumerate(_STAGES, start=1):
        assert f"[{i}/4] {stage}: done in" in first, first[-3000:]
    samples_path = os.path.join(workdir, "samples.json")
    export_record = os.path.join(workdir, "export", "saved_model", "verification.json")
    before = {p: os.stat(p).st_mtime_ns for p in (samples_path, export_record)}

    # More training steps: training resumes, and everything made from the old
    # checkpoint is made again from the new one (before: "already done, skipping").
    more = _run_lm(workdir, _lm_config(corpus_file, 20), capsys)
    assert "[1/4] train: done in" in more, more[-3000:]
    for stage in ("samples", "export"):
        assert f"re-running {stage}: checkpoint ckpt-20 ≠ ckpt-10 it was made from" in more, more
    assert "[2/4] evaluate: done in" in more
    for path, mtime in before.items():
        assert os.stat(path).st_mtime_ns != mtime, path
    stamps = json.loads(open(os.path.join(workdir, STAMPS_FILE)).read())["stages"]
    for stage in ("evaluate", "samples", "export"):
        assert stamps[stage]["upstream"]["checkpoint"]["checkpoint"] == "ckpt-20", stage
    assert json.load(open(os.path.join(workdir, "metrics.json")))["full_eval_step"] == 20

    # Unchanged: every stage is up to date.
    again = _run_lm(workdir, _lm_config(corpus_file, 20), capsys)
    for i, stage in enumerate(_STAGES, start=1):
        assert f"[{i}/4] {stage}: already done, skipping" in again, again[-3000:]
    assert "re-running" not in again

    # A changed model config does not silently reuse (or resume) the old model.
    changed = _lm_config(corpus_file, 20)
    changed.model.dropout = 0.1
    with pytest.raises(ConfigError, match=r"config\.model\.dropout: 0\.0 there, 0\.1 now"):
        _run_lm(workdir, changed, capsys)
